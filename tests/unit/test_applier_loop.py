"""The preference applier's run loop on an in-memory store and fake Kafka: no services needed."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from tests.unit.kafka_fakes import FakeConsumer, FakeEndOffsets, FakeTopic
from tests.unit.policy_fakes import event
from worker.codec import AvroCodec
from worker.config import Settings
from worker.kafka import clients
from worker.kafka.clients import MembershipWatch
from worker.metrics import Metrics
from worker.models import Category, Channel, PreferenceEvent, RejectionReason, SendRequest, SuppressionReason
from worker.models import PreferenceEventType as T
from worker.policy.decision import DecisionPolicy
from worker.policy.event_keys import kafka_key
from worker.preferences.applier import PreferenceApplier
from worker.preferences.rejections import Rejection
from worker.runtime import StopSignal
from worker.state.errors import StateUnavailable
from worker.state.memory_store import MemoryStateStore

SETTINGS = Settings()
CODEC = AvroCodec.from_settings(SETTINGS)
ORG = "org-loop"


class RecordedRejections:
    def __init__(self) -> None:
        self.written: list[Rejection] = []

    def write(self, rejections: list[Rejection]) -> None:
        self.written.extend(rejections)

    def reasons(self) -> list[RejectionReason]:
        return sorted((r.reason for r in self.written), key=lambda r: r.value)


class CommitFailsOnce(MemoryStateStore):
    """Redis going away between the rejections and the commit of one batch."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def commit_shards(self, **kwargs: Any):  # type: ignore[no-untyped-def]
        if self.failures == 0 and kwargs["writes"].keys:
            self.failures += 1
            raise StateUnavailable("Redis: connection reset (injected)")
        return super().commit_shards(**kwargs)


class Setup:
    def __init__(self, store: MemoryStateStore | None = None, partitions: int = 2) -> None:
        self.topic = FakeTopic(SETTINGS.topics.preferences, partitions)
        self.group_offsets: dict[int, int] = {}
        self.store = store or MemoryStateStore()
        self.consumers: list[FakeConsumer] = []
        self.rejections = RecordedRejections()
        self.metrics = Metrics()

    def produce(self, ev: PreferenceEvent, *, partition: int = 0, key: str | None = None) -> None:
        value = CODEC.encode("PreferenceEvent", ev.to_record())
        self.topic.append(partition, (key if key is not None else kafka_key(ev)).encode(), value)

    def produce_raw(self, value: bytes, *, partition: int = 0) -> None:
        self.topic.append(partition, b"raw", value)

    def consumer(self) -> FakeConsumer:
        consumer = FakeConsumer(self.topic, self.group_offsets)
        self.consumers.append(consumer)
        return consumer

    def applier(self, *, end_offsets: FakeEndOffsets | None = None, stop: StopSignal | None = None) -> PreferenceApplier:
        return PreferenceApplier(
            settings=SETTINGS,
            store=self.store,
            codec=CODEC,
            consumer_factory=self.consumer,  # type: ignore[arg-type]
            rejection_writer=self.rejections,  # type: ignore[arg-type]
            end_offsets=end_offsets or FakeEndOffsets(self.topic),  # type: ignore[arg-type]
            metrics=self.metrics,
            stop=stop or StopSignal(),
        )

    def run(self) -> PreferenceApplier:
        applier = self.applier()
        applier.run(idle_exit_seconds=0.3)
        return applier

    def decide(self, request: SendRequest) -> tuple[SuppressionReason, ...]:
        policy = DecisionPolicy()
        prepared = policy.prepare(request)
        return policy.decide(prepared, self.store.read(prepared.keys).facts).reasons

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def email_to(address: str) -> SendRequest:
    return SendRequest("m", ORG, "u1", "c1", Channel.EMAIL, Category.MARKETING, address, "agent@lender.example", 0)


def test_a_batch_with_poison_applies_the_valid_events_and_rejects_the_rest() -> None:
    setup = Setup()
    setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email="out@example.com"))
    setup.produce_raw(b"\x00\x00\x00\x00\x02garbage")
    setup.produce(event(T.SMS_OPT_OUT, org=ORG, phone="+14155550100"), partition=1)
    setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email="not an address"), partition=1)
    applier = setup.run()

    assert setup.decide(email_to("out@example.com")) == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)
    assert setup.rejections.reasons() == [
        RejectionReason.INVALID_ADDRESS, RejectionReason.SMS_NOT_OPTED_IN, RejectionReason.UNDECODABLE,
    ]
    status = setup.store.status()
    assert status.ready and status.progress == setup.topic.ends() == {0: 2, 1: 2}
    assert setup.group_offsets == {0: 2, 1: 2}
    assert applier.progress.events_applied == 1 and applier.progress.events_rejected == 3
    assert setup.sample("sendgate_preference_events_total", type="UNDECODABLE", result="rejected") == 1


def test_a_failed_commit_pauses_then_applies_every_event_exactly_once() -> None:
    setup = Setup(store=CommitFailsOnce())
    for i in range(5):
        setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email=f"o{i}@example.com"), partition=i % 2)
    opt_out = event(T.SMS_OPT_OUT, org=ORG, phone="+14155550100")
    setup.produce(opt_out)
    applier = setup.run()

    assert setup.store.failures == 1  # type: ignore[attr-defined]
    assert setup.sample("sendgate_state_errors_total", kind="StateUnavailable") == 1
    assert len(setup.consumers) == 2, "the batch is consumed again from the store's progress by a new consumer"
    for i in range(5):
        assert setup.decide(email_to(f"o{i}@example.com")) == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)
    assert setup.store.status().progress == setup.topic.ends()
    assert applier.progress.events_applied == 5
    # Published before the failed commit and again with the batch applied anew: at least once.
    assert [r.event.event_id for r in setup.rejections.written if r.event] == [opt_out.event_id] * 2


def test_a_rebuild_neither_republishes_rejections_nor_moves_the_group_offsets_back() -> None:
    setup = Setup()
    setup.produce(event(T.SMS_OPT_OUT, org=ORG, phone="+14155550100"))
    setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email="kept@example.com"))
    setup.run()
    assert len(setup.rejections.written) == 1

    setup.store.flush()  # FLUSHALL: the applier rebuilds from the start of the topic
    setup.produce(event(T.SMS_OPT_OUT, org=ORG, phone="+14155550101"))
    applier = setup.run()

    assert applier.progress.rebuilds == 1
    assert setup.decide(email_to("kept@example.com")) == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)
    assert len(setup.rejections.written) == 2, "only the new event's rejection is published"
    for consumer in setup.consumers:
        offsets = [offset for partition, offset in consumer.commits if partition == 0]
        assert offsets == sorted(offsets), "a rebuild never commits the group back"
    assert setup.group_offsets[0] == 3


def test_an_event_keyed_other_than_by_its_normalised_subject_is_applied_and_counted() -> None:
    setup = Setup()
    setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email="Jane@Example.com"), key=f"{ORG}:Jane@Example.com")
    setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email="bob@example.com"))
    setup.run()

    assert setup.decide(email_to("jane@example.com")) == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)
    assert setup.sample("sendgate_preference_events_miskeyed_total", type="EMAIL_OPT_OUT_ORGANIZATION") == 1


class RecordsCommits(MemoryStateStore):
    """Remembers, per commit, the shards it names and the shards its writes land in."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[tuple[set[int], set[int]]] = []

    def commit_shards(self, **kwargs: Any):  # type: ignore[no-untyped-def]
        self.commits.append((set(kwargs["shards"]), {self.shard_of(key) for key in kwargs["writes"].keys}))
        return super().commit_shards(**kwargs)


def produce_opt_outs(setup: Setup, numbers: range) -> None:
    for i in numbers:
        setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email=f"o{i}@example.com"), partition=i % 2)


def opted_out_everywhere(setup: Setup, count: int) -> None:
    for i in range(count):
        assert setup.decide(email_to(f"o{i}@example.com")) == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,), i


def test_a_shard_that_came_back_empty_is_reapplied_alone_and_the_others_are_not_written() -> None:
    store = RecordsCommits()
    setup = Setup(store=store)
    produce_opt_outs(setup, range(40))
    setup.run()
    lost = store.shard_of(next(iter(store.cells))[0])
    others = {cell: value for cell, value in store.cells.items() if store.shard_of(cell[0]) != lost}
    store.flush(lost)  # its node came back empty after a failover
    assert store.status().generation is None  # the gate fails closed meanwhile
    store.commits.clear()
    applier = setup.run()

    opted_out_everywhere(setup, 40)
    assert applier.progress.rebuilds == 1
    assert {n for named, _ in store.commits for n in named} == {lost}, "only the lost shard is committed"
    assert {n for _, written in store.commits for n in written} == {lost}
    assert {c: v for c, v in store.cells.items() if store.shard_of(c[0]) != lost} == others
    status = store.status()
    assert status.ready and all(part.progress == setup.topic.ends() for part in status.shards.values())


def test_a_shard_that_came_back_older_is_caught_up_from_its_own_progress() -> None:
    store = RecordsCommits()
    setup = Setup(store=store)
    produce_opt_outs(setup, range(20))
    setup.run()
    older_shard = 3
    older_status = store.shard_status(older_shard)
    older_cells = {c: v for c, v in store.cells.items() if store.shard_of(c[0]) == older_shard}
    produce_opt_outs(setup, range(20, 40))
    setup.run()
    # Asynchronous replication: the promoted replica had not seen the second half.
    store.flush(older_shard)
    store.cells.update(older_cells)
    store._shards[older_shard] = older_status
    assert store.status().progress == {0: 10, 1: 10}  # the barrier holds the gate back
    store.commits.clear()
    setup.run()

    opted_out_everywhere(setup, 40)
    assert {n for named, _ in store.commits for n in named} == {older_shard}
    assert store.status().progress == setup.topic.ends()


class StuckAfterFirstRead(FakeEndOffsets):
    """Answers the first end-offsets read (the generation's targets); every later one waits until released."""

    def __init__(self, topic: FakeTopic) -> None:
        super().__init__(topic)
        self.reads = 0
        self.stuck = threading.Event()
        self.release = threading.Event()

    def read(self) -> dict[int, int]:
        self.reads += 1
        if self.reads > 1:
            self.stuck.set()
            self.release.wait(30)
        return super().read()


def test_an_end_offsets_read_waiting_for_kafka_does_not_hold_back_applying() -> None:
    setup = Setup()
    setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email="first@example.com"))
    offsets = StuckAfterFirstRead(setup.topic)
    stop = StopSignal()
    applier = setup.applier(end_offsets=offsets, stop=stop)
    running = threading.Thread(target=applier.run, daemon=True)
    running.start()
    try:
        assert offsets.stuck.wait(10), "the lag metric never asked for end offsets"
        setup.produce(event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email="later@example.com"), partition=1)
        deadline = time.monotonic() + 10
        while setup.store.status().progress.get(1, 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert setup.store.status().progress.get(1, 0) == 1, "an event arriving while the lag read waits was not applied"
        assert setup.decide(email_to("later@example.com")) == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)
    finally:
        offsets.release.set()
        stop.set()
        running.join(10)
    assert not running.is_alive()


class CoordinatorLost:
    """A consumer without partitions whose committed() never gets an answer."""

    def assignment(self) -> list[Any]:
        return []

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets: Local: Timed out"))


def test_an_applier_left_without_a_coordinator_recreates_its_consumer_only_when_a_fresh_client_is_served(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    applier = Setup().applier()
    watch = MembershipWatch(Settings(), group_id="g", topic="preferences.changed", after_seconds=0.0, timeout=0.1)
    monkeypatch.setattr(clients, "group_coordinator_answers", lambda *a, **k: False)
    applier._raise_if_left_behind(CoordinatorLost(), watch)  # type: ignore[arg-type]  # the broker serves nobody: wait
    monkeypatch.setattr(clients, "group_coordinator_answers", lambda *a, **k: True)
    with pytest.raises(Exception, match="without partitions and without a coordinator"):
        applier._raise_if_left_behind(CoordinatorLost(), watch)  # type: ignore[arg-type]
