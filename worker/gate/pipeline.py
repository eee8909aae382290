"""The gate's run loop: a list of named steps, one Kafka transaction per commit interval.

consume → prepare → read fresh state (one round trip, in the read thread) →
decide → produce → tally → (on count or timer) send offsets + commit. A
batch's state read overlaps deciding and producing the batch before it. Any
retryable failure aborts the open transaction and rewinds to the committed
offsets, so nothing is allowed on doubtful state and nothing is lost.
"""

from __future__ import annotations

import collections
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Histogram

from worker._native import Outcome, PreparedBatch
from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import DeadLetterBurst, KafkaFatal, RetryableError
from worker.gate.core import PoisonValue, build_core
from worker.gate.freshness import FreshStateReader
from worker.gate.outputs import Headers, OutputBuilder
from worker.gate.transactions import RetriableKafkaError, TransactionAborted, call_kafka, classify
from worker.health import Health
from worker.metrics import Metrics
from worker.runtime import Backoff, StopSignal, tune_garbage_collector
from worker.state.store import PackedSnapshot

logger = logging.getLogger(__name__)

MASKED_DETAIL_LIMIT = 300
IDLE_READINESS_INTERVAL_SECONDS = 1.0
SEND_OFFSETS_TIMEOUT_SECONDS = 10.0
COMMIT_TIMEOUT_SECONDS = 20.0


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
        self._in_flight: _Batch | None = None
        self._in_flight_dropped = False
        # One thread: reads run in batch order on the store's connection.
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sendgate-state-read")
        self.progress = GateProgress()

    # -- run loop ---------------------------------------------------------
    def run(self, *, max_messages: int | None = None, idle_exit_seconds: float | None = None) -> GateProgress:
        """Run until stopped (or bounded by ``max_messages`` / ``idle_exit_seconds`` for tests and bench)."""
        tune_garbage_collector()
        call_kafka(lambda: self._producer.init_transactions(30), what="init_transactions", metrics=self._metrics, timeout=30)
        self._consumer.subscribe(
            [self._topics.requested], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        last_message_at = time.monotonic()
        try:
            while not self._stop.is_set:
                if max_messages is not None and self.progress.consumed >= max_messages:
                    break  # _finish commits what is open
                try:
                    had_messages = self._step()
                except RetryableError as exc:
                    self._fail_closed(exc)
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
            self._finish()
        finally:
            self._reads.shutdown(wait=False, cancel_futures=True)
            self._consumer.close()
        return self.progress

    def _step(self) -> bool:
        started = time.perf_counter()
        timeout = self._consume_timeout()
        messages = self._consumer.consume(self._gate.batch_max_messages, timeout)
        self._metrics.batch_phase.labels(phase="consume").observe(time.perf_counter() - started)
        if self._in_flight_dropped:
            # A rebalance dropped the batch in flight during consume(): what it
            # held, and what this call returned after it, is consumed again.
            self._in_flight_dropped = False
            self._rewind()
            return True
        messages = [m for m in messages if self._accept(m)]
        batch = self._start(messages) if messages else None
        previous, self._in_flight = self._in_flight, None
        if previous is not None:
            self._complete(previous)
        self._in_flight = batch
        if batch is None and previous is None:
            self._probe_readiness_when_idle()
        if self._in_transaction and self._commit_due():
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
        state_text = snapshot.status.describe()
        outcome = batch.prepared.decide(snapshot.found, now_ms, state_text)
        self._produce_outcome(batch, outcome, decided_at=now_ms, state=state_text)
        self._advance_offsets(batch.messages)
        phase.labels(phase="produce").observe(time.perf_counter() - t2)
        self._tally(outcome)

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
        next_offsets = self._next_offsets
        for message in messages:
            partition, after = message.partition(), message.offset() + 1
            if after > next_offsets.get(partition, -1):
                next_offsets[partition] = after
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

    def _produce(self, produce: Any, topic: str, value: bytes | None, key: bytes | None, headers: list) -> None:
        while True:
            try:
                produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let librdkafka send
            except KafkaException as exc:
                classified = classify(exc, what="produce", metrics=self._metrics)
                if not isinstance(classified, RetriableKafkaError):
                    raise classified from exc
                self._producer.poll(0.05)

    def _dead_letter(self, message: Message, exc: Exception) -> None:
        error_class = getattr(exc, "error_class", type(exc).__name__)
        now = time.monotonic()
        window = self._dead_letter_times
        window.append(now)
        while window and now - window[0] > self._gate.dead_letter_burst_window_seconds:
            window.popleft()
        if len(window) > self._gate.dead_letter_burst_max:
            self._abort()
            raise DeadLetterBurst(
                f"more than {self._gate.dead_letter_burst_max} undecodable requests within "
                f"{self._gate.dead_letter_burst_window_seconds}s: stopping instead of draining "
                f"{self._topics.requested} into {self._topics.dead_letter}"
            )
        headers = OutputBuilder.dead_letter_headers(
            error_class=error_class,
            detail=str(exc)[:MASKED_DETAIL_LIMIT],
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
        )
        self._produce(self._producer.produce, self._topics.dead_letter, message.value(), message.key(), headers)
        self.progress.dead_lettered += 1
        self._metrics.dead_letters.labels(error_class=error_class).inc()
        logger.warning(
            "undecodable send request dead-lettered",
            extra={"at": f"{message.topic()}[{message.partition()}]@{message.offset()}", "error_class": error_class},
        )

    def _accept(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return message.partition() in self._assigned
        self._metrics.kafka_errors.labels(kind=error.name()).inc()
        if error.fatal() or error.code() == KafkaError._FATAL:
            # librdkafka reports some fatal consumer errors (e.g. a static member
            # fenced by its successor) as _FATAL with fatal() false.
            raise KafkaFatal(f"gate consumer: {error}")
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

    def _commit_due(self) -> bool:
        return (
            self._transaction_messages >= self._gate.commit_every_messages
            or time.monotonic() - self._transaction_started >= self._gate.commit_interval_seconds
        )

    def _commit(self) -> None:
        started = time.perf_counter()
        offsets = [TopicPartition(self._topics.requested, p, o) for p, o in self._next_offsets.items()]
        try:
            if offsets:
                group = self._consumer.consumer_group_metadata()
                call_kafka(
                    lambda: self._producer.send_offsets_to_transaction(offsets, group, SEND_OFFSETS_TIMEOUT_SECONDS),
                    what="send_offsets_to_transaction",
                    metrics=self._metrics,
                    timeout=SEND_OFFSETS_TIMEOUT_SECONDS,
                )
            call_kafka(
                lambda: self._producer.commit_transaction(COMMIT_TIMEOUT_SECONDS),
                what="commit_transaction",
                metrics=self._metrics,
                timeout=COMMIT_TIMEOUT_SECONDS,
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
            try:
                call_kafka(
                    lambda: self._producer.abort_transaction(COMMIT_TIMEOUT_SECONDS),
                    what="abort_transaction",
                    metrics=self._metrics,
                    timeout=COMMIT_TIMEOUT_SECONDS,
                )
            finally:
                self._in_transaction = False
            self.progress.aborted_transactions += 1
            self._metrics.transactions.labels(result="aborted").inc()
        self._next_offsets.clear()

    def _rewind(self) -> None:
        """Seek every assigned partition back to its committed offset."""
        assignment = self._consumer.assignment()
        if not assignment:
            return
        for tp in self._consumer.committed(assignment, timeout=10):
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
        try:
            self._rewind()
        except KafkaException as exc:
            logger.warning("rewind failed; the next assignment restarts from committed offsets", extra={"error": str(exc)})
        paused_at = time.monotonic()
        self._stop.wait(delay)
        self._metrics.fail_closed_seconds.inc(time.monotonic() - paused_at)

    # -- rebalance --------------------------------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in partitions)
        logger.info("gate assigned", extra={"topic": self._topics.requested, "partitions": sorted(tp.partition for tp in partitions)})

    def _drop_in_flight(self) -> None:
        """Forget the batch in flight: none of it was produced, and its offsets are not committed."""
        if self._in_flight is not None:
            self._in_flight = None
            self._in_flight_dropped = True

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop_in_flight()
        if self._in_transaction:
            try:
                self._commit()
            except RetryableError as exc:
                logger.warning("commit on revoke failed; aborting", extra={"cause": str(exc)})
                self._abort()
        self._assigned.difference_update(tp.partition for tp in partitions)
        logger.info("gate revoked", extra={"partitions": sorted(tp.partition for tp in partitions)})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
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
    for bucket, n in zip(buckets, counts):
        if n:
            bucket.inc(n)
    total.inc(outcome.latency_sum)
