"""The gate's run loop: a list of named steps, one Kafka transaction per commit interval.

consume → prepare → read fresh state (one round trip, in the read thread) →
decide → produce → tally → (on count or timer) send offsets + commit. A
batch's state read overlaps deciding and producing the batch before it. Any
retryable failure aborts the open transaction and rewinds to the committed
offsets, so nothing is allowed on doubtful state and nothing is lost. A
Kafka client librdkafka declares dead is rebuilt in-process (bounded): see
``_recover``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Histogram

from worker._native import Outcome, PreparedBatch
from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import DeadLetterBurst, KafkaRetriable, RetryableError, TransactionAborted
from worker.gate.core import PoisonValue, build_core
from worker.gate.freshness import FreshStateReader
from worker.gate.outputs import Headers, OutputBuilder
from worker.gate.recovery import coordinator_answers_others, init_transactions_until_ready, raise_if_producer_fenced
from worker.health import Health
from worker.kafka.batches import available_batch
from worker.kafka.classification import classify, is_fatal, kafka_error
from worker.kafka.clients import MembershipWatch
from worker.kafka.messages import next_offsets, partition_offset
from worker.kafka.recovery import ConsumerFatal, ProducerFatal, RecoveryBudget, close_in_background
from worker.kafka.transactions import call_kafka, commit_due
from worker.metrics import Metrics
from worker.runtime import Backoff, StopSignal, tune_garbage_collector
from worker.state.store import PackedSnapshot, StoreStatus

logger = logging.getLogger(__name__)

MASKED_DETAIL_LIMIT = 300
IDLE_READINESS_INTERVAL_SECONDS = 1.0
SEND_OFFSETS_TIMEOUT_SECONDS = 5.0
COMMIT_TIMEOUT_SECONDS = 20.0
ABORT_TIMEOUT_SECONDS = 5.0
# A healthy answer takes milliseconds; a consumer that lost its coordinator
# never answers (see _rewind_or_raise), and each second here is a second paused.
COMMITTED_TIMEOUT_SECONDS = 2.0
# A fresh client asked whether the broker serves the group, while our producer's call blocks.
STUCK_PROBE_TIMEOUT_SECONDS = 1.0
# Consecutive rewinds timing out before the consumer is taken for one that lost
# its group coordinator for good, even if a fresh client is not answered either.
REWIND_TIMEOUTS_BEFORE_RECREATE = 2
# A gate without partitions this long asks whether its consumer still has a
# group coordinator (see MembershipWatch).
UNASSIGNED_CHECK_SECONDS = 3.0


@dataclass
class GateProgress:
    """Counts since start; read by tests, bench and the CLI."""

    consumed: int = 0
    allowed: int = 0
    suppressed: int = 0
    dead_lettered: int = 0
    committed_transactions: int = 0
    aborted_transactions: int = 0
    fail_closed_pauses: int = 0
    state_round_trips: int = 0
    batches: int = 0


@dataclass(slots=True)
class _Batch:
    """Consumed and prepared records whose state read is in flight."""

    messages: list[Message]
    prepared: PreparedBatch
    snapshot: Future[PackedSnapshot]


class Gate:
    """Decides every request of ``sends.requested`` exactly once.

    Two batches overlap: while Redis and Kafka answer the state read of one
    batch, the previous one is decided and produced. A batch in flight holds
    no output and no offset, so dropping it (rebalance, fail-closed) and
    consuming its records again from the committed offsets loses nothing.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        consumer: Consumer,
        producer: Producer,
        codec: AvroCodec,
        state: FreshStateReader,
        metrics: Metrics,
        health: Health,
        stop: StopSignal,
        consumer_factory: Callable[[], Consumer] | None = None,
        producer_factory: Callable[[], Producer] | None = None,
    ) -> None:
        self._settings = settings
        self._gate = settings.gate
        self._topics = settings.topics
        self._consumer = consumer
        self._producer = producer
        self._codec = codec
        self._state = state
        self._metrics = metrics
        self._health = health
        self._stop = stop
        # Same identity as the first pair (instance id, transactional id), for in-process rebuilds.
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._rewind_timeouts = 0
        self._recoveries = RecoveryBudget(
            limit=settings.kafka.recoveries_max if consumer_factory and producer_factory else 0,
            window=settings.kafka.recovery_window_seconds,
            metrics=metrics,
            worker="gate",
        )
        self._core = build_core(settings, codec, latency_bounds=_bucket_bounds(metrics.decision_latency))
        self._outputs = OutputBuilder(policy_version=self._gate.policy_version)
        self._backoff = Backoff(self._gate.backoff_initial_seconds, self._gate.backoff_max_seconds)
        self._in_transaction = False
        self._transaction_started = 0.0
        self._transaction_messages = 0
        self._next_offsets: dict[int, int] = {}
        self._assigned: set[int] = set()
        self._dead_letter_times: collections.deque[float] = collections.deque()
        self._readiness_checked_at = 0.0
        self._membership = MembershipWatch(
            settings,
            group_id=settings.gate.group_id,
            topic=self._topics.requested,
            after_seconds=UNASSIGNED_CHECK_SECONDS,
            timeout=COMMITTED_TIMEOUT_SECONDS,
        )
        self._in_flight: _Batch | None = None
        self._in_flight_dropped = False
        # The store answers the same status object while its meta is unchanged: described once.
        self._described: tuple[StoreStatus | None, str] = (None, "")
        # One thread: reads run in batch order on the store's connection.
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sendgate-state-read")
        self.progress = GateProgress()

    # -- run loop ---------------------------------------------------------
    def run(self, *, max_messages: int | None = None, idle_exit_seconds: float | None = None) -> GateProgress:
        """Run until stopped (or bounded by ``max_messages`` / ``idle_exit_seconds`` for tests and bench)."""
        tune_garbage_collector()
        producer = self._producer  # bound now: see _commit
        call_kafka(lambda: producer.init_transactions(30), what="init_transactions", metrics=self._metrics, timeout=30)
        self._subscribe()
        last_message_at = time.monotonic()
        try:
            while not self._stop.is_set:
                if max_messages is not None and self.progress.consumed >= max_messages:
                    break  # _finish commits what is open
                try:
                    had_messages = self._step()
                except (RetryableError, ProducerFatal, ConsumerFatal) as exc:
                    self._recover(exc)
                    continue
                now = time.monotonic()
                if had_messages:
                    last_message_at = now
                elif (
                    idle_exit_seconds is not None
                    and not self._in_transaction
                    and self._in_flight is None
                    and now - last_message_at >= idle_exit_seconds
                ):
                    break
            try:
                self._finish()
            except (ProducerFatal, ConsumerFatal) as exc:
                # Stopping anyway: what is open is aborted by the next init_transactions
                # of this instance id (or its transaction timeout) and consumed again.
                logger.warning("could not commit on the way out; consumed again on restart", extra={"cause": str(exc)})
        finally:
            self._reads.shutdown(wait=False, cancel_futures=True)
            self._consumer.close()
        return self.progress

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            [self._topics.requested], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _step(self) -> bool:
        started = time.perf_counter()
        timeout = self._consume_timeout()
        messages = available_batch(self._consumer, self._gate.batch_max_messages, timeout)
        self._metrics.batch_phase.labels(phase="consume").observe(time.perf_counter() - started)
        if self._in_flight_dropped:
            # A rebalance dropped the batch in flight during consume(): what it
            # held, and what this call returned after it, is consumed again. An
            # error among them may be the consumer's death notice (a static
            # member fenced as the broker came back), which is given only once.
            self._in_flight_dropped = False
            for message in messages:
                if message.error() is not None:
                    self._accept(message)
            self._rewind_or_raise("a dropped batch")
            return True
        messages = self._accepted(messages)
        batch = self._start(messages) if messages else None
        previous, self._in_flight = self._in_flight, None
        if previous is not None:
            self._complete(previous)
        self._in_flight = batch
        if batch is None and previous is None:
            self._probe_readiness_when_idle()
            self._check_membership_when_idle()
        if self._in_transaction and self._commit_due(caught_up=batch is None):
            self._commit()
        self._health.mark_alive()
        return bool(messages)

    def _consume_timeout(self) -> float:
        """How long consume() may wait: never past the commit deadline, not at all with a batch in flight.

        A batch in flight is decided only after the next consume() returns, and
        an open transaction's records become visible only at its commit: both
        would wait out the whole poll timeout otherwise.
        """
        if self._in_flight is not None:
            return 0.0
        timeout = self._gate.poll_timeout_seconds
        if self._in_transaction:
            until_due = self._transaction_started + self._gate.commit_interval_seconds - time.monotonic()
            timeout = max(0.0, min(timeout, until_due))
        return timeout

    def _probe_readiness_when_idle(self) -> None:
        """An idle gate reports whether it could decide, so probes and rollouts need no traffic."""
        now = time.monotonic()
        if now - self._readiness_checked_at < IDLE_READINESS_INTERVAL_SECONDS:
            return
        self._readiness_checked_at = now
        try:
            self._state.probe()
        except RetryableError as exc:
            self._health.set_ready(False, reason=str(exc))
            return
        self._health.set_ready(True)

    def _check_membership_when_idle(self) -> None:
        """Re-create a consumer left without partitions and without a group coordinator (same instance id)."""
        lost = self._membership.left_behind(self._consumer, assigned=bool(self._assigned))
        if lost is not None:
            raise ConsumerFatal(f"gate consumer without partitions and without a coordinator: {lost}")

    def _finish(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        try:
            if in_flight is not None:
                self._complete(in_flight)
        except RetryableError as exc:
            logger.warning("last batch not decided; it is consumed again on restart", extra={"cause": str(exc)})
            self._abort()
            return
        if self._in_transaction:
            try:
                self._commit()
            except RetryableError as exc:
                logger.warning("final commit failed; aborting", extra={"cause": str(exc)})
                self._abort()

    # -- one batch --------------------------------------------------------
    def _start(self, messages: list[Message]) -> _Batch:
        """Prepare ``messages`` and send their state read.

        Prepare and decide are the compiled core's (``worker._native``, see
        ``worker.gate.core``): one call per batch each, so the loop does
        nothing per record but hand librdkafka what the core answered.
        """
        self._metrics.batch_size.observe(len(messages))
        t0 = time.perf_counter()
        prepared = self._core.prepare([message.value() for message in messages])
        snapshot = self._reads.submit(self._state.read_packed, prepared)
        self._metrics.batch_phase.labels(phase="decode").observe(time.perf_counter() - t0)
        return _Batch(messages, prepared, snapshot)

    def _complete(self, batch: _Batch) -> None:
        """Decide ``batch`` on its state and produce every outcome into the open transaction."""
        phase = self._metrics.batch_phase
        t1 = time.perf_counter()
        snapshot = batch.snapshot.result()
        self.progress.state_round_trips += 1
        t2 = time.perf_counter()
        phase.labels(phase="state").observe(t2 - t1)
        self._health.set_ready(True)
        self._backoff.reset()

        self._begin_if_needed()
        now_ms = int(time.time() * 1000)
        state_text = self._state_text(snapshot.status)
        outcome = batch.prepared.decide(snapshot.found, now_ms, state_text)
        self._produce_outcome(batch, outcome, decided_at=now_ms, state=state_text)
        self._advance_offsets(batch.messages)
        phase.labels(phase="produce").observe(time.perf_counter() - t2)
        self._tally(outcome)

    def _state_text(self, status: StoreStatus) -> str:
        """``status.describe()`` (the details' and headers' state), once per status object."""
        described, text = self._described
        if status is not described:
            text = status.describe()
            self._described = (status, text)
        return text

    def _produce_outcome(self, batch: _Batch, outcome: Outcome, *, decided_at: int, state: str) -> None:
        """Hand every decided record to librdkafka; undecodable ones go to the dead-letter topic last."""
        messages = batch.messages
        produce = self._producer.produce
        decided_text = str(decided_at).encode()
        state_header = state.encode()
        allowed_topic, suppressed_topic = self._topics.allowed, self._topics.suppressed
        # Every plainly allowed record of the batch carries the same headers
        # (produce copies them), so each header list is built once per batch.
        allowed_headers = self._outputs.allowed_headers((), decided_at=decided_text, state=state_header)
        variants: dict[str, Headers] = {}
        for index in outcome.allowed:
            message = messages[index]
            value, key = message.value(), message.key()
            try:
                produce(allowed_topic, value=value, key=key, headers=allowed_headers)
            except (BufferError, KafkaException):  # not queued: the slow path retries or classifies
                self._produce(produce, allowed_topic, value, key, allowed_headers)
        for index, bypassed in outcome.bypassed:
            headers = variants.get(bypassed)
            if headers is None:
                headers = variants[bypassed] = self._outputs.allowed_headers(
                    bypassed.split(","), decided_at=decided_text, state=state_header
                )
            message = messages[index]
            self._produce(produce, allowed_topic, message.value(), message.key(), headers)
        for index, value, primary in outcome.suppressed:
            headers = variants.get(primary)
            if headers is None:
                headers = variants[primary] = self._outputs.suppressed_headers(primary, decided_at=decided_text)
            self._produce(produce, suppressed_topic, value, messages[index].key(), headers)
        self.progress.allowed += len(outcome.allowed) + len(outcome.bypassed)
        self.progress.suppressed += len(outcome.suppressed)
        for index, error_class, detail in [*batch.prepared.poison, *outcome.poison]:
            self._dead_letter(messages[index], PoisonValue(error_class, detail))

    def _advance_offsets(self, messages: list[Message]) -> None:
        # After every produce: dead letters are produced last but may sit at
        # lower offsets, and the committed offset must never move backwards.
        committing = self._next_offsets
        for partition, after in next_offsets(messages).items():
            if after > committing.get(partition, -1):
                committing[partition] = after
        self.progress.consumed += len(messages)
        self.progress.batches += 1
        self._transaction_messages += len(messages)

    def _tally(self, outcome: Outcome) -> None:
        """The batch's decisions into the metrics: a few label look-ups per batch, none per record."""
        metrics = self._metrics
        _observe_buckets(metrics.decision_latency, outcome)
        for (channel, category, decision, reason), n in outcome.decisions.items():
            metrics.decisions.labels(channel=channel, category=category, decision=decision, reason=reason).inc(n)
        for (channel, category, reason), n in outcome.reasons.items():
            metrics.suppression_reasons.labels(channel=channel, category=category, reason=reason).inc(n)
        for reason, n in outcome.bypasses.items():
            metrics.transactional_bypasses.labels(reason=reason).inc(n)

    def _produce(self, produce: Any, topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> None:
        while True:
            try:
                produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let librdkafka send
            except KafkaException as exc:
                classified = classify(exc, what="produce", metrics=self._metrics)
                if not isinstance(classified, KafkaRetriable):
                    raise classified from exc
                self._producer.poll(0.05)

    def _dead_letter(self, message: Message, exc: Exception) -> None:
        error_class = getattr(exc, "error_class", type(exc).__name__)
        if self._gate.dead_letter_burst_max is not None:
            self._check_dead_letter_burst(self._gate.dead_letter_burst_max)
        partition, offset = partition_offset(message)
        headers = OutputBuilder.dead_letter_headers(
            error_class=error_class,
            detail=str(exc)[:MASKED_DETAIL_LIMIT],
            topic=message.topic() or self._topics.requested,
            partition=partition,
            offset=offset,
        )
        self._produce(self._producer.produce, self._topics.dead_letter, message.value(), message.key(), headers)
        self.progress.dead_lettered += 1
        self._metrics.dead_letters.labels(error_class=error_class).inc()
        logger.warning(
            "undecodable send request dead-lettered",
            extra={"at": f"{message.topic()}[{message.partition()}]@{message.offset()}", "error_class": error_class},
        )

    def _check_dead_letter_burst(self, limit: int) -> None:
        """Opt-in (SENDGATE_GATE__DEAD_LETTER_BURST_MAX): stop rather than drain a flood of poison."""
        now = time.monotonic()
        window = self._dead_letter_times
        window.append(now)
        while window and now - window[0] > self._gate.dead_letter_burst_window_seconds:
            window.popleft()
        if len(window) > limit:
            self._abort()
            raise DeadLetterBurst(
                f"more than {limit} undecodable requests within "
                f"{self._gate.dead_letter_burst_window_seconds}s: stopping instead of draining "
                f"{self._topics.requested} into {self._topics.dead_letter}"
            )

    def _accepted(self, messages: list[Message]) -> list[Message]:
        """The messages to decide: those without an error, of a partition still assigned.

        The common batch, all of them, costs one pass of two C calls a
        message; any other is sorted again message by message by ``_accept``.
        """
        assigned = self._assigned
        accepted = [m for m in messages if m.error() is None and m.partition() in assigned]
        if len(accepted) < len(messages):
            accepted = [m for m in messages if self._accept(m)]
        return accepted

    def _accept(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return message.partition() in self._assigned
        self._metrics.kafka_errors.labels(kind=error.name()).inc()
        if is_fatal(error):
            # The consumer is dead: _recover re-creates it or exits.
            raise ConsumerFatal(f"gate consumer: {error}")
        if error.code() != KafkaError._PARTITION_EOF:
            logger.warning("gate consumer error", extra={"error": str(error)})
        return False

    # -- transactions -----------------------------------------------------
    def _begin_if_needed(self) -> None:
        if not self._in_transaction:
            call_kafka(self._producer.begin_transaction, what="begin_transaction", metrics=self._metrics)
            self._in_transaction = True
            self._transaction_started = time.monotonic()
            self._transaction_messages = 0

    def _commit_due(self, *, caught_up: bool) -> bool:
        # caught_up: this step took nothing and no batch is left in flight, so all
        # that was consumed is decided and in the transaction.
        return commit_due(
            self._gate, opened_at=self._transaction_started, records=self._transaction_messages, caught_up=caught_up
        )

    def _broker_serves_the_group(self) -> bool:
        """A fresh client's answer, asked while our producer's call blocks (see call_kafka's stuck_if)."""
        # Not stable offsets: our own open transaction holds them unstable while the call blocks.
        return coordinator_answers_others(
            self._settings, partitions=set(self._assigned), timeout=STUCK_PROBE_TIMEOUT_SECONDS, require_stable=False
        )

    def _commit(self) -> None:
        started = time.perf_counter()
        offsets = [TopicPartition(self._topics.requested, p, o) for p, o in self._next_offsets.items()]
        # Bound now, not when the call runs: a call abandoned by the watchdog goes on
        # retrying in its thread, and must only ever touch the producer it was made on
        # (dead and fenced by then). Through self._producer it reached the rebuilt one:
        # "Conflicting init_transactions API call", and a stray commit_transaction
        # could end the new producer's transaction with its input offsets not yet in it.
        producer = self._producer
        try:
            if offsets:
                group = self._consumer.consumer_group_metadata()
                call_kafka(
                    lambda: producer.send_offsets_to_transaction(offsets, group, SEND_OFFSETS_TIMEOUT_SECONDS),
                    what="send_offsets_to_transaction",
                    metrics=self._metrics,
                    timeout=SEND_OFFSETS_TIMEOUT_SECONDS,
                    stuck_if=self._broker_serves_the_group,
                )
            call_kafka(
                lambda: producer.commit_transaction(COMMIT_TIMEOUT_SECONDS),
                what="commit_transaction",
                metrics=self._metrics,
                timeout=COMMIT_TIMEOUT_SECONDS,
                stuck_if=self._broker_serves_the_group,
            )
        except TransactionAborted:
            self._metrics.transactions.labels(result="failed").inc()
            raise
        self._in_transaction = False
        self._next_offsets.clear()
        self.progress.committed_transactions += 1
        self._metrics.transactions.labels(result="committed").inc()
        self._metrics.batch_phase.labels(phase="commit").observe(time.perf_counter() - started)

    def _abort(self) -> None:
        if self._in_transaction:
            producer = self._producer  # bound now: see _commit
            try:
                call_kafka(
                    lambda: self._abort_or_replace(producer),
                    what="abort_transaction",
                    metrics=self._metrics,
                    timeout=ABORT_TIMEOUT_SECONDS,
                )
            finally:
                self._in_transaction = False
            self.progress.aborted_transactions += 1
            self._metrics.transactions.labels(result="aborted").inc()
        self._next_offsets.clear()

    def _abort_or_replace(self, producer: Producer) -> None:
        """abort_transaction, or ProducerFatal when it cannot finish in time.

        An abort first waits for every outstanding produce request; with the
        broker restarting (and stale broker handles, see worker/kafka/clients.py)
        that took the whole timeout and more, while the partitions stood
        still. A rebuilt producer's init_transactions aborts the transaction
        on the coordinator as soon as it answers.
        """
        try:
            producer.abort_transaction(ABORT_TIMEOUT_SECONDS)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError._TIMED_OUT:
                raise ProducerFatal(f"abort_transaction did not finish within {ABORT_TIMEOUT_SECONDS:g} s ({error})") from exc
            raise

    def _rewind(self) -> None:
        """Seek every assigned partition back to its committed offset."""
        assignment = self._consumer.assignment()
        if not assignment:
            return
        for tp in self._consumer.committed(assignment, timeout=COMMITTED_TIMEOUT_SECONDS):
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
            self._consumer.seek(tp)

    def _fail_closed(self, cause: RetryableError) -> None:
        delay = self._backoff.next_delay()
        kind = type(cause).__name__
        logger.warning("gate failing closed: transaction aborted, pausing", extra={"cause": str(cause), "retry_in_seconds": delay})
        self._health.set_ready(False, reason=str(cause))
        self._metrics.fail_closed_pauses.labels(cause=kind).inc()
        self._metrics.state_errors.labels(kind=kind).inc()
        self.progress.fail_closed_pauses += 1
        self._in_flight = None  # consumed again after the rewind below
        self._in_flight_dropped = False
        self._abort()
        paused_at = time.monotonic()
        try:
            self._rewind_or_raise("an abort")
        finally:
            self._stop.wait(delay)
            self._metrics.fail_closed_seconds.inc(time.monotonic() - paused_at)

    def _rewind_or_raise(self, after: str) -> None:
        """Rewind, or raise: going on from the consumer's position would skip what was aborted.

        A retryable failure (the coordinator is moving, as a broker stops) is
        retried through the fail-closed pause; a dead consumer is re-created,
        and a new consumer starts from the committed offsets.

        After a single-node broker restart a consumer can stay without a group
        coordinator ("broker -1") while the broker serves everyone else: its
        committed() times out again and again, its session times out and its
        rejoin never starts (librdkafka #5511: a coordinator request waits for
        a broker state change that does not come). A new consumer looks the
        coordinator up afresh. So a timeout is put to a fresh client at once:
        answered, our consumer is the one left behind and is re-created now
        (this used to wait for a second timeout and cost the slowest restarts
        6-9 s); not answered either, the broker is not serving the group yet,
        and only repeated timeouts re-create it.
        """
        try:
            self._rewind()
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is not None and is_fatal(error):
                raise ConsumerFatal(f"rewind after {after}: {error}") from exc
            if error is not None and error.code() == KafkaError._TIMED_OUT:
                self._rewind_timeouts += 1
                if coordinator_answers_others(self._settings, partitions=set(self._assigned), timeout=COMMITTED_TIMEOUT_SECONDS):
                    self._rewind_timeouts = 0
                    raise ConsumerFatal(f"rewind after {after}: committed offsets timed out, though a new client is answered") from exc
                if self._rewind_timeouts >= REWIND_TIMEOUTS_BEFORE_RECREATE:
                    self._rewind_timeouts = 0
                    raise ConsumerFatal(f"rewind after {after}: committed offsets timed out {REWIND_TIMEOUTS_BEFORE_RECREATE} times in a row") from exc
            raise TransactionAborted(f"rewind after {after} failed, retrying: {exc}") from exc
        self._rewind_timeouts = 0

    # -- in-process recovery of dead Kafka clients ----------------------------
    def _recover(self, cause: RetryableError | ProducerFatal | ConsumerFatal) -> None:
        """What a step raised, handled in one place: fail closed, or rebuild the dead client.

        A recovery may itself fail (the broker is still down, the rebuilt
        producer finds the consumer dead too): the next cause is handled the
        same way. Every rebuild spends the budget, whose end is a plain
        KafkaFatal (exit 11), as is ProducerFenced (exit 10): neither is caught here.
        """
        while not self._stop.is_set:
            try:
                if isinstance(cause, ProducerFatal):
                    self._rebuild_producer(cause)
                elif isinstance(cause, ConsumerFatal):
                    self._recreate_consumer(cause)
                else:
                    self._fail_closed(cause)
                return
            except (RetryableError, ProducerFatal, ConsumerFatal) as again:
                cause = again

    def _forget_open_work(self) -> None:
        """Nothing decided since the last commit survives: it is consumed again from the committed offsets."""
        self._in_flight = None
        self._in_flight_dropped = False
        if self._in_transaction:
            self.progress.aborted_transactions += 1
            self._metrics.transactions.labels(result="aborted").inc()
        self._in_transaction = False
        self._next_offsets.clear()

    def _rebuild_producer(self, cause: ProducerFatal) -> None:
        """A new transactional producer with our transactional id; the dead one's work is undone.

        The new producer's ``init_transactions`` makes the coordinator abort
        what the dead one left open (or complete a commit it had already
        decided) and fences the dead one: it can never commit again. Only then
        are the committed offsets read (read_committed, so a commit still
        completing is waited for), and the consumer rewound to them.
        """
        self._recoveries.spend(client="producer", cause=cause)
        self._health.set_ready(False, reason=str(cause))
        self._forget_open_work()
        dead, self._producer = self._producer, self._producer_factory()  # type: ignore[misc]
        with contextlib.suppress(KafkaException, RuntimeError):
            dead.purge(in_queue=True, in_flight=True, blocking=False)  # nothing of it may still be sent
        close_in_background(dead, "producer")
        init_transactions_until_ready(self._producer, metrics=self._metrics, stop=self._stop)
        self._rewind_or_raise("a producer rebuild")

    def _recreate_consumer(self, cause: ConsumerFatal) -> None:
        """A new consumer with our instance id, after making sure no other live gate holds it.

        What was open is aborted first (the new member starts from the
        committed offsets); a producer fenced by another process with our
        instance id ends the gate (exit 10) instead of stealing the membership back.
        """
        self._recoveries.spend(client="consumer", cause=cause)
        self._health.set_ready(False, reason=str(cause))
        self._in_flight = None
        self._in_flight_dropped = False
        held = set(self._assigned)
        self._abort()
        raise_if_producer_fenced(self._producer, settings=self._settings, partitions=held, metrics=self._metrics)
        dead, self._consumer = self._consumer, self._consumer_factory()  # type: ignore[misc]
        self._assigned.clear()
        close_in_background(dead, "consumer")  # its rebalance callbacks are ignored: see _current
        self._subscribe()

    def _current(self, consumer: Consumer) -> bool:
        """Rebalance callbacks of a dead consumer being closed in the background change nothing."""
        return consumer is self._consumer

    # -- rebalance --------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self._current(consumer):
            return
        self._assigned.update(tp.partition for tp in partitions)
        logger.info("gate assigned", extra={"topic": self._topics.requested, "partitions": sorted(tp.partition for tp in partitions)})

    def _drop_in_flight(self) -> None:
        """Forget the batch in flight: none of it was produced, and its offsets are not committed."""
        if self._in_flight is not None:
            self._in_flight = None
            self._in_flight_dropped = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self._current(consumer):
            return
        self._drop_in_flight()
        if self._in_transaction:
            try:
                self._commit()
            except RetryableError as exc:
                logger.warning("commit on revoke failed; aborting", extra={"cause": str(exc)})
                self._abort()
        self._assigned.difference_update(tp.partition for tp in partitions)
        logger.info("gate revoked", extra={"partitions": sorted(tp.partition for tp in partitions)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self._current(consumer):
            return
        self._drop_in_flight()
        self._abort()
        self._assigned.difference_update(tp.partition for tp in partitions)
        logger.warning("gate partitions lost; open transaction aborted", extra={"partitions": sorted(tp.partition for tp in partitions)})


def _bucket_bounds(histogram: Histogram) -> list[float]:
    """The histogram's bucket bounds (the last is +Inf), or none if prometheus_client's internals differ."""
    bounds = getattr(histogram, "_upper_bounds", None)
    return list(bounds) if isinstance(bounds, list) else []


def _observe_buckets(histogram: Histogram, outcome: Outcome) -> None:
    """The batch's decision latencies into ``histogram``: one lock round per bucket, not per record.

    The core counted them per bucket of the bounds it was given; if
    prometheus_client's internals ever differ, each latency is observed.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    counts = outcome.latency_buckets
    if bounds is None or buckets is None or total is None or len(buckets) != len(counts):
        for amount in outcome.latencies():
            histogram.observe(amount)
        return
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)
    total.inc(outcome.latency_sum)
