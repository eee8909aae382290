"""The preference applier's run loop: consume → plan → read → apply → reject → commit → tally.

Progress lives in the state store, per shard, committed atomically with the
facts of that shard it covers; Kafka consumer-group offsets are only written
for lag dashboards. A shard that comes back older or empty (a Redis Cluster
failover) is noticed on commit or by its missing generation, and re-applied
from its own progress: the consumer rewinds to the least progress of any
shard, and a batch is committed only to the shards that have not applied it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from worker._native import AppliedEvents, PlannedEvents
from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import RetryableError
from worker.health import Health
from worker.kafka.classification import is_fatal
from worker.kafka.clients import MembershipWatch
from worker.kafka.messages import partition_offset
from worker.kafka.offsets import CommittedEndOffsets
from worker.kafka.recovery import ConsumerFatal, RecoveryBudget, close_in_background
from worker.metrics import Metrics
from worker.models import RejectionReason
from worker.preferences.core import build_applier_core
from worker.preferences.rejections import Rejection, RejectionWriter
from worker.runtime import Backoff, StopSignal, tune_garbage_collector
from worker.state.errors import GenerationLost, OlderLayout, ProgressConflict, StateUnavailable
from worker.state.store import PackedWrites, ShardCommit, StateStore, StoreStatus

logger = logging.getLogger(__name__)

IDLE_PROGRESS_INTERVAL_SECONDS = 0.2
LAG_INTERVAL_SECONDS = 1.0
MEMBERSHIP_CHECK_INTERVAL_SECONDS = 1.0
UNASSIGNED_CHECK_SECONDS = 3.0
COORDINATOR_PROBE_SECONDS = 3.0


@dataclass
class ApplierProgress:
    """What the applier has done since it started; read by tests, the CLI and progress bars."""

    events_applied: int = 0
    events_rejected: int = 0
    batches: int = 0
    rebuilds: int = 0
    status: StoreStatus = field(default_factory=StoreStatus)


class CommittedOffsetsUnavailable(RetryableError):
    """Kafka did not say which rejections this group already published; the batch is applied again."""


class _Resync(Exception):
    """Internal: drop the consumer and start over from the store's progress."""


class PreferenceApplier:
    """Applies preference events to the store; run one or more per deployment."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: StateStore,
        codec: AvroCodec,
        consumer_factory: Callable[[], Consumer],
        rejection_writer: RejectionWriter,
        end_offsets: CommittedEndOffsets,
        metrics: Metrics,
        stop: StopSignal,
        health: Health | None = None,
    ) -> None:
        self._settings = settings
        self._topic = settings.topics.preferences
        self._store = store
        self._codec = codec
        self._consumer_factory = consumer_factory
        self._rejections = rejection_writer
        self._end_offsets = end_offsets
        self._metrics = metrics
        self._stop = stop
        self._health = health
        self._core = build_applier_core(settings, codec)
        self._backoff = Backoff(settings.gate.backoff_initial_seconds, settings.gate.backoff_max_seconds)
        self.progress = ApplierProgress()
        # Per shard: its generation, its status, and per assigned partition the progress it holds (-1: none).
        self._generations: dict[int, str | None] = {}
        self._shard_status: dict[int, StoreStatus] = {}
        self._expected: dict[int, dict[int, int]] = {}
        self._assigned: set[int] = set()
        self._resync_requested = False
        # Per partition: below this offset, the group's rejections were published before.
        self._published: dict[int, int] = {}
        self._consumer_dead = False
        self._recoveries = RecoveryBudget(
            limit=settings.kafka.recoveries_max, window=settings.kafka.recovery_window_seconds, metrics=metrics, worker="applier"
        )

    def run(self, *, until_ready: bool = False, idle_exit_seconds: float | None = None) -> ApplierProgress:
        """Run until stopped; ``until_ready`` returns once the store is ready (rebuilds)."""
        tune_garbage_collector()
        self._store.check()
        # The lag metric asks Kafka for end offsets, which can wait seconds for an
        # answer after a broker restart (worker/kafka/offsets.py); asked from the
        # apply loop, that wait once held back applying for over 5 s, and every
        # gate failed closed at the freshness barrier meanwhile.
        lag_stop = threading.Event()
        lag_thread = threading.Thread(target=self._observe_lag_until, args=(lag_stop,), name="sendgate-applier-lag", daemon=True)
        lag_thread.start()
        try:
            return self._run(until_ready=until_ready, idle_exit_seconds=idle_exit_seconds)
        finally:
            lag_stop.set()

    def _run(self, *, until_ready: bool, idle_exit_seconds: float | None) -> ApplierProgress:
        while not self._stop.is_set:
            try:
                if self._run_generation(until_ready=until_ready, idle_exit_seconds=idle_exit_seconds):
                    break
                self._backoff.reset()
            except (GenerationLost, ProgressConflict, _Resync) as exc:
                logger.warning("applier resynchronising with the store", extra={"cause": str(exc)})
                self._metrics.state_errors.labels(kind=type(exc).__name__).inc()
            except RetryableError as exc:
                delay = self._backoff.next_delay()
                logger.warning("applier paused", extra={"cause": str(exc), "retry_in_seconds": delay})
                self._metrics.state_errors.labels(kind=type(exc).__name__).inc()
                self._metrics.state_ready.set(0)
                self._stop.wait(delay)
        return self.progress

    def _ensure_generation(self) -> StoreStatus:
        try:
            status = self._store.status()
        except OlderLayout as exc:
            # The store is a cache of the topic: an old layout is simply rebuilt. A newer
            # one is left alone (IncompatibleLayout, exit 14): a not-yet-upgraded applier
            # must not empty what an upgraded one builds.
            logger.warning("state store has an older layout: emptying it to rebuild", extra={"cause": str(exc)})
            self._store.clear()
            status = self._store.status()
        if status.generation is None:
            lost = [n for n, part in status.shards.items() if part.generation is None]
            targets = self._end_offsets.read()
            status = self._store.begin_generation(targets)  # only the shards without one begin anew
            self.progress.rebuilds += 1
            self._metrics.state_generation_resets.inc()
            logger.warning(
                "state shards are empty (no generation marker): rebuilding them from the beginning of the topic",
                extra={"topic": self._topic, "targets": targets, "shards": lost, "generation": status.generation},
            )
        self._generations = {n: part.generation for n, part in status.shards.items()}
        self._shard_status = dict(status.shards)
        self.progress.status = status
        self._metrics.state_ready.set(1 if status.ready else 0)
        return status

    def _changed_shards(self, status: StoreStatus) -> list[int]:
        """The shards whose generation is not the one this applier works on."""
        return sorted(n for n, part in status.shards.items() if part.generation != self._generations.get(n))

    def _run_generation(self, *, until_ready: bool, idle_exit_seconds: float | None) -> bool:
        self._ensure_generation()
        consumer = self._consumer_factory()
        self._expected = {shard: {} for shard in range(self._store.shard_count)}
        self._assigned = set()
        self._published = {}
        self._resync_requested = False
        self._consumer_dead = False

        # A dead consumer is closed in the background (below); its callbacks must not touch this generation.
        def current(callback: Callable[[Consumer, list[TopicPartition]], None]) -> Callable[[Consumer, list[TopicPartition]], None]:
            return lambda c, partitions: callback(c, partitions) if c is consumer else None

        consumer.subscribe(
            [self._topic], on_assign=current(self._on_assign), on_revoke=current(self._on_revoke), on_lost=current(self._on_revoke)
        )
        last_message_at = time.monotonic()
        last_idle_progress = 0.0
        last_membership_check = 0.0
        membership = MembershipWatch(
            self._settings,
            group_id=self._settings.preferences.group_id,
            topic=self._topic,
            after_seconds=UNASSIGNED_CHECK_SECONDS,
            timeout=COORDINATOR_PROBE_SECONDS,
        )
        try:
            while not self._stop.is_set:
                if until_ready and self.progress.status.ready:
                    return True
                messages = consumer.consume(self._settings.preferences.batch_max_messages, self._settings.preferences.poll_timeout_seconds)
                if self._health is not None:
                    self._health.mark_alive()
                if self._resync_requested:
                    raise _Resync("assignment found a different generation")
                now = time.monotonic()
                if messages:
                    self._apply_batch(consumer, messages)
                    last_message_at = now
                elif now - last_idle_progress >= IDLE_PROGRESS_INTERVAL_SECONDS:
                    self._advance_idle_progress(consumer)
                    last_idle_progress = now
                    if idle_exit_seconds is not None and now - last_message_at >= idle_exit_seconds:
                        return True
                if now - last_membership_check >= MEMBERSHIP_CHECK_INTERVAL_SECONDS:
                    last_membership_check = now
                    self._raise_if_left_behind(consumer, membership)
            return True
        finally:
            if self._consumer_dead:
                close_in_background(consumer, "applier-consumer")  # its close can wait on a coordinator it lost
            else:
                consumer.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            status = self._store.status()
        except StateUnavailable:
            self._resync_requested = True
            status = self.progress.status
        if self._changed_shards(status):
            self._resync_requested = True
        for tp in partitions:
            # From the least progress of any shard: a shard that lost events re-applies them,
            # and the shards that hold them are not written again (_shard_commits).
            held = [part.progress.get(tp.partition) for part in status.shards.values()]
            tp.offset = OFFSET_BEGINNING if None in held or not held else min(o for o in held if o is not None)
            for shard, part in status.shards.items():
                self._expected.setdefault(shard, {})[tp.partition] = part.progress.get(tp.partition, -1)
            self._assigned.add(tp.partition)
        consumer.assign(partitions)
        logger.info(
            "applier assigned",
            extra={"topic": self._topic, "partitions": {tp.partition: tp.offset for tp in partitions}},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.discard(tp.partition)
            for held in self._expected.values():
                held.pop(tp.partition, None)

    def _apply_batch(self, consumer: Consumer, messages: list[Message]) -> None:
        started = time.perf_counter()
        batch, progress = self._take(messages)
        if not progress:
            return
        planned = self._core.plan([m.value() for m in batch], [m.key() for m in batch])
        snapshot = self._store.read_packed(planned.keys, planned.fields, planned.fact_count)
        changed = self._changed_shards(snapshot.status)
        if changed:
            raise GenerationLost(f"the generation of shards {changed} changed while applying a batch")
        applied = planned.apply(snapshot.found)
        rejections = self._rejections_of(batch, planned, applied)
        self._rejections.write(self._not_yet_published(consumer, rejections))
        self._commit_shards(progress, PackedWrites(applied.keys, applied.writes))
        self._commit_group_offsets(consumer, progress)
        self._count_miskeyed(batch, planned)  # once applied: a batch applied again counts again otherwise
        for (kind, result), n in applied.tallies.items():
            self._metrics.preference_events.labels(type=kind, result=result).inc(n)
        if planned.undecodable:
            self._metrics.preference_events.labels(type="UNDECODABLE", result="rejected").inc(len(planned.undecodable))
        self.progress.events_applied += planned.size - len(applied.rejections)
        self.progress.events_rejected += len(rejections)
        self.progress.batches += 1
        self._metrics.preference_batch_seconds.observe(time.perf_counter() - started)

    def _commit_shards(self, progress: dict[int, int], writes: PackedWrites) -> None:
        """Commit ``writes`` and ``progress`` to every shard that has not applied the batch yet.

        A shard behind on any of the batch's partitions gets all its writes
        (re-applying an event it holds changes nothing: application is
        idempotent and order-tolerant) and its progress; a shard holding the
        whole batch is left alone. Shards the batch writes nothing to still
        get their progress, so the freshness barrier passes them.
        """
        commits: dict[int, ShardCommit] = {}
        for shard, held in self._expected.items():
            moved = {p: o for p, o in progress.items() if held.get(p, -1) < o}
            if moved:
                generation = self._generations.get(shard) or ""
                commits[shard] = ShardCommit(generation=generation, expected={p: held.get(p, -1) for p in moved}, progress=moved)
        if not commits:
            return
        split = writes.by_shard(self._store.shard_of)
        kept = [shard for shard in split if shard in commits]
        status = self._store.commit_shards(
            shards=commits,
            writes=PackedWrites(
                [k for shard in kept for k in split[shard].keys], [w for shard in kept for w in split[shard].writes]
            ),
        )
        for shard, part in commits.items():
            self._expected[shard].update(part.progress)
        self._after_commit(status)

    def _take(self, messages: list[Message]) -> tuple[list[Message], dict[int, int]]:
        """The messages this applier applies (its partitions' events) and the progress they make."""
        batch: list[Message] = []
        progress: dict[int, int] = {}
        expected = self._assigned
        for message in messages:
            error = message.error()
            if error is not None:
                self._raise_kafka_error(error)
                continue
            partition, offset = partition_offset(message)
            if partition not in expected:
                continue  # revoked while the batch was in flight: its new owner applies it
            progress[partition] = offset + 1
            batch.append(message)
        return batch, progress

    def _rejections_of(self, batch: list[Message], planned: PlannedEvents, applied: AppliedEvents) -> list[Rejection]:
        """The batch's rejections, undecodable values first, each with its message's key and position."""
        rejections: list[Rejection] = []
        for index, error_class, detail in planned.undecodable:
            message = batch[index]
            rejections.append(
                Rejection(key=message.key(), reason=RejectionReason.UNDECODABLE, detail=detail, raw=message.value(), at=partition_offset(message))
            )
            logger.warning(
                "undecodable preference event rejected",
                extra={"at": f"{self._topic}[{message.partition()}]@{message.offset()}", "error": error_class},
            )
        for index, reason, detail in applied.rejections:
            message = batch[index]
            # The core decoded it, so the codec does too (its reader accepts a superset).
            event = self._codec.decode_preference_event(message.value())
            rejections.append(
                Rejection(key=message.key(), reason=RejectionReason(reason), detail=detail, event=event, at=partition_offset(message))
            )
        return rejections

    def _count_miskeyed(self, batch: list[Message], planned: PlannedEvents) -> None:
        """SPEC §4: an event keyed other than by its normalised subject is applied all the same, and counted."""
        for index, kind, event_id in planned.miskeyed:
            message = batch[index]
            self._metrics.preference_events_miskeyed.labels(type=kind).inc()
            # Neither key goes into the log: both hold the subject's address.
            logger.warning(
                "preference event not keyed by its normalised subject",
                extra={"at": f"{self._topic}[{message.partition()}]@{message.offset()}", "type": kind, "event_id": event_id},
            )

    def _not_yet_published(self, consumer: Consumer, rejections: list[Rejection]) -> list[Rejection]:
        """Drop the rejections an earlier applier of this group already published.

        After the store is emptied, or its layout changes, the topic is applied
        again from the start. The group's committed offsets, written only after
        a batch's rejections were acknowledged, mark what was published.
        """
        if not rejections:
            return rejections
        floor = self._published_floor(consumer, {r.at[0] for r in rejections if r.at is not None})
        return [r for r in rejections if r.at is None or r.at[1] >= floor.get(r.at[0], 0)]

    def _published_floor(self, consumer: Consumer, partitions: set[int]) -> dict[int, int]:
        missing = sorted(partitions - self._published.keys())
        if missing:
            try:
                committed = consumer.committed([TopicPartition(self._topic, p) for p in missing], timeout=self._settings.preferences.committed_timeout_seconds)
            except KafkaException as exc:
                raise CommittedOffsetsUnavailable(f"committed offsets of {self._topic}: {exc}") from exc
            for tp in committed:
                self._published[tp.partition] = max(tp.offset, 0)  # negative: nothing committed
        return self._published

    def _commit_group_offsets(self, consumer: Consumer, progress: dict[int, int]) -> None:
        """Lag dashboards read these; a rebuild never moves them back below what was published."""
        offsets = [
            TopicPartition(self._topic, p, o) for p, o in progress.items() if o >= self._published.get(p, 0)
        ]
        if offsets:
            consumer.commit(offsets=offsets, asynchronous=True)

    def _advance_idle_progress(self, consumer: Consumer) -> None:
        """Move progress past transaction markers, which carry offsets but no events."""
        assignment = consumer.assignment()
        if not assignment:
            return
        positions = {
            tp.partition: tp.offset for tp in consumer.position(assignment) if tp.partition in self._assigned and tp.offset >= 0
        }
        behind = any(held.get(p, -1) < o for held in self._expected.values() for p, o in positions.items())
        if not behind:
            # Idle: still look at the markers, so an emptied shard is rebuilt before
            # the next event arrives rather than after, and see readiness that
            # another applier's commits brought.
            status = self._store.status()
            changed = self._changed_shards(status)
            if changed:
                raise GenerationLost(f"the generation marker of shards {changed} is gone or changed")
            self._after_commit(status)
            return
        self._commit_shards(positions, PackedWrites([], []))

    def _after_commit(self, status: StoreStatus) -> None:
        self._shard_status.update(status.shards)
        combined = StoreStatus.combine(self._shard_status)
        if combined.ready and not self.progress.status.ready:
            logger.info("state store ready", extra={"generation": combined.generation, "applied": dict(combined.progress)})
        self.progress.status = combined
        self._metrics.state_ready.set(1 if combined.ready else 0)

    def _observe_lag_until(self, stop: threading.Event) -> None:
        while not stop.wait(LAG_INTERVAL_SECONDS):
            try:
                self._observe_lag()
            except Exception as exc:  # a metric: whatever it meets, the loop that applies goes on and meets it too
                logger.warning("preference lag not observed", extra={"error": str(exc)})

    def _observe_lag(self) -> None:
        try:
            ends = self._end_offsets.read()
        except RetryableError:
            return
        applied = self.progress.status.progress
        self._metrics.preference_lag.set(sum(max(0, end - applied.get(p, 0)) for p, end in ends.items()))

    def _raise_if_left_behind(self, consumer: Consumer, membership: MembershipWatch) -> None:
        """Re-create a consumer left without partitions and without a coordinator (see MembershipWatch).

        Asked after 3 s without partitions: after 10 s the gates had failed
        closed at the barrier for 15 s in the 20-restart row.
        """
        lost = membership.left_behind(consumer, assigned=bool(consumer.assignment()))
        if lost is None:
            return
        cause = ConsumerFatal(f"applier consumer without partitions and without a coordinator: {lost}")
        self._consumer_dead = True
        self._recoveries.spend(client="consumer", cause=cause)
        raise _Resync(str(cause)) from cause

    def _raise_kafka_error(self, error: KafkaError) -> None:
        self._metrics.kafka_errors.labels(kind=error.name()).inc()
        if is_fatal(error):
            # A dead consumer (e.g. a static member fenced by its own rejoin after a
            # broker restart): a new one with the same instance id, from the store's
            # progress. Nothing in the store depends on the group, so there is no
            # zombie to tell apart; the budget ends a consumer that keeps dying (exit 11).
            cause = ConsumerFatal(f"applier consumer: {error}")
            self._consumer_dead = True
            self._recoveries.spend(client="consumer", cause=cause)
            raise _Resync(str(cause)) from cause
        logger.warning("applier consumer error", extra={"error": str(error)})

