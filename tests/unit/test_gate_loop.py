"""The gate's run loop on an in-memory store and fake Kafka: no services needed.

The store is filled by the real preference applier (on a fake topic), read
through the real freshness reader, and the gate's outputs land in a fake
transactional producer that records each committed and aborted transaction.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from tests.unit.kafka_fakes import FakeConsumer, FakeEndOffsets, FakeTopic, FakeTransactionalProducer, Produced
from tests.unit.policy_fakes import event
from worker._native import PreparedBatch
from worker.codec import AvroCodec
from worker.config import Settings
from worker.gate.freshness import FreshStateReader
from worker.gate.pipeline import Gate
from worker.health import Health
from worker.metrics import Metrics
from worker.models import Category, Channel, SendRequest
from worker.models import PreferenceEventType as T
from worker.policy.event_keys import kafka_key
from worker.preferences.applier import PreferenceApplier
from worker.runtime import StopSignal
from worker.state.memory_store import MemoryStateStore
from worker.state.store import PackedSnapshot, StoreStatus

BASE = Settings()
CODEC = AvroCodec.from_settings(BASE)
ORG = "org-gate-loop"
OPTED_OUT = "out@example.com"


def settings(**gate: Any) -> Settings:
    tuned = {"backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.02, "barrier_timeout_seconds": 0.05, **gate}
    return BASE.model_copy(update={"gate": BASE.gate.model_copy(update=tuned)})


class MemoryFreshStateReader(FreshStateReader):
    """The real freshness logic (``_fresh``) over a memory store: ``read_packed`` only admits a Redis store."""

    def read_packed(self, batch: PreparedBatch) -> PackedSnapshot:
        store = self._store
        assert isinstance(store, MemoryStateStore)
        return self._fresh(lambda: store.read_packed(batch.keys, batch.fields, batch.fact_count))


class NotReadyFirst(MemoryStateStore):
    """For its first ``not_ready_left`` packed reads, a store the gate must not decide on, then its real state.

    ``empty``: no generation marker (FLUSHALL). ``rebuilding``: a generation
    whose progress covers the barrier but that has not reached its rebuild
    targets, with none of its facts written yet: only the readiness check
    keeps the gate from allowing on it.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.not_ready_left = 0
        self.observed: list[tuple[int, dict[int, int]]] = []  # (records produced so far, group offsets) at each refused read
        self.producer: FakeTransactionalProducer | None = None

    def read_packed(self, keys: list[str], fields: list[bytes], fact_count: int) -> PackedSnapshot:
        if self.not_ready_left > 0:
            self.not_ready_left -= 1
            assert self.producer is not None
            produced = sum(len(t.records) for t in [*self.producer.committed, *self.producer.aborted])
            produced += len(self.producer.open.records) if self.producer.open else 0
            self.observed.append((produced, dict(self.producer.group_offsets)))
            real = super().status()
            if self.mode == "empty":
                return PackedSnapshot(found=[], status=StoreStatus())
            targets = {p: o + 100 for p, o in real.progress.items()}
            return PackedSnapshot(
                found=[], status=StoreStatus(generation=real.generation, ready=False, progress=real.progress, targets=targets)
            )
        return super().read_packed(keys, fields, fact_count)


class World:
    """Preferences applied into a memory store, a requests topic, and the gate's fake clients."""

    def __init__(self, *, store: MemoryStateStore | None = None, partitions: int = 2, **gate: Any) -> None:
        self.settings = settings(**gate)
        self.store = store or MemoryStateStore()
        self.preferences = FakeTopic(BASE.topics.preferences, 1)
        self.preference_offsets: dict[int, int] = {}
        self.requests = FakeTopic(BASE.topics.requested, partitions)
        self.group_offsets: dict[int, int] = {}
        self.consumer = FakeConsumer(self.requests, self.group_offsets)
        self.producer = FakeTransactionalProducer(self.group_offsets)
        self.end_offsets: Any = FakeEndOffsets(self.preferences)
        self.metrics = Metrics()
        self.sent: list[tuple[int, int, str]] = []  # (partition, offset, to) of every valid send

    def opt_out(self, email: str) -> None:
        ev = event(T.EMAIL_OPT_OUT_ORGANIZATION, org=ORG, email=email)
        self.preferences.append(0, kafka_key(ev).encode(), CODEC.encode("PreferenceEvent", ev.to_record()))

    def apply_preferences(self) -> None:
        PreferenceApplier(
            settings=BASE,
            store=self.store,
            codec=CODEC,
            consumer_factory=lambda: FakeConsumer(self.preferences, self.preference_offsets),  # type: ignore[arg-type,return-value]
            rejection_writer=_NoRejections(),  # type: ignore[arg-type]
            end_offsets=FakeEndOffsets(self.preferences),  # type: ignore[arg-type]
            metrics=Metrics(),
            stop=StopSignal(),
        ).run(idle_exit_seconds=0.2)
        assert self.store.status().ready

    def send(self, to: str, *, partition: int = 0, category: Category = Category.MARKETING) -> None:
        n = len(self.sent)
        request = SendRequest(f"m{n}", ORG, "u1", f"c{n}", Channel.EMAIL, category, to, "agent@lender.example", 0)
        offset = self.requests.append(partition, f"k{n}".encode(), CODEC.encode("SendRequest", request.to_record()))
        self.sent.append((partition, offset, to))

    def poison(self, value: bytes, *, partition: int = 0) -> int:
        return self.requests.append(partition, b"poison", value)

    def run(self, **kwargs: Any) -> Gate:
        gate = Gate(
            settings=self.settings,
            consumer=self.consumer,  # type: ignore[arg-type]
            producer=self.producer,  # type: ignore[arg-type]
            codec=CODEC,
            state=MemoryFreshStateReader(
                store=self.store,
                end_offsets=self.end_offsets,
                metrics=self.metrics,
                barrier_timeout_seconds=self.settings.gate.barrier_timeout_seconds,
            ),
            metrics=self.metrics,
            health=Health(self.metrics),
            stop=StopSignal(),
        )
        gate.run(idle_exit_seconds=kwargs.pop("idle_exit_seconds", 0.3), **kwargs)
        return gate

    def committed(self, topic: str) -> list[Produced]:
        return self.producer.committed_records(topic)


class _NoRejections:
    def write(self, rejections: list[Any]) -> None:
        assert not rejections, rejections


def _to(record: Produced) -> str:
    return SendRequest.from_record(CODEC.decode("SendRequest", record.value)).to


def _suppressed_to_and_reasons(record: Produced) -> tuple[str, list[str]]:
    decoded = CODEC.decode("SuppressedSend", record.value)
    return decoded["request"]["to"], list(decoded["reasons"])


def test_a_batch_of_valid_sends_is_decided_once_each_and_its_offsets_committed() -> None:
    world = World()
    world.opt_out(OPTED_OUT)
    world.apply_preferences()
    for i in range(6):
        world.send(f"ok{i}@example.com", partition=i % 2)
    world.send(OPTED_OUT, partition=0)
    world.send(OPTED_OUT, partition=1)
    gate = world.run()

    allowed = world.committed(BASE.topics.allowed)
    suppressed = world.committed(BASE.topics.suppressed)
    assert sorted(_to(r) for r in allowed) == [f"ok{i}@example.com" for i in range(6)]
    assert all(r.headers["sendgate-decision"] == b"ALLOWED" for r in allowed)
    assert [_suppressed_to_and_reasons(r) for r in suppressed] == [(OPTED_OUT, ["EMAIL_OPT_OUT_ORGANIZATION"])] * 2
    assert all(r.headers["sendgate-primary-reason"] == b"EMAIL_OPT_OUT_ORGANIZATION" for r in suppressed)
    assert world.committed(BASE.topics.dead_letter) == []
    assert world.producer.aborted == []
    assert world.group_offsets == {0: 4, 1: 4} == world.requests.ends()
    assert (gate.progress.allowed, gate.progress.suppressed, gate.progress.dead_lettered) == (6, 2, 0)


def test_poison_in_the_middle_of_a_batch_is_dead_lettered_and_the_sends_around_it_decided() -> None:
    world = World(partitions=1)
    world.opt_out(OPTED_OUT)
    world.apply_preferences()
    world.send("before@example.com")
    bad_magic = world.poison(b"not avro at all")
    world.send(OPTED_OUT)
    unknown_schema = world.poison(b"\x00\x00\x00\x7f\x7fgarbage")
    world.send("after@example.com")
    gate = world.run()

    assert sorted(_to(r) for r in world.committed(BASE.topics.allowed)) == ["after@example.com", "before@example.com"]
    assert [_suppressed_to_and_reasons(r)[0] for r in world.committed(BASE.topics.suppressed)] == [OPTED_OUT]
    dead = world.committed(BASE.topics.dead_letter)
    assert [r.value for r in dead] == [b"not avro at all", b"\x00\x00\x00\x7f\x7fgarbage"]
    assert [int(r.headers["sendgate-source-offset"]) for r in dead] == [bad_magic, unknown_schema]
    for record in dead:
        assert record.key == b"poison"
        assert record.headers["sendgate-source-topic"] == BASE.topics.requested.encode()
        assert record.headers["sendgate-source-partition"] == b"0"
        assert record.headers["sendgate-error-class"]
        assert b"sendgate-decision" not in record.headers
    assert dead[0].headers["sendgate-error-class"] == b"bad-magic-byte"
    assert world.group_offsets == {0: 5}
    assert gate.progress.dead_lettered == 2 and gate.progress.fail_closed_pauses == 0


@pytest.mark.parametrize("mode", ["empty", "rebuilding"])
def test_a_store_not_ready_fails_closed_then_decides_every_send_once_it_is(mode: str) -> None:
    store = NotReadyFirst(mode)
    world = World(store=store)
    store.producer = world.producer
    world.opt_out(OPTED_OUT)
    world.apply_preferences()
    store.not_ready_left = 3  # armed once the applier is done: the gate's first three reads are refused
    for i in range(4):
        world.send(f"ok{i}@example.com", partition=i % 2)
    world.send(OPTED_OUT, partition=1)
    gate = world.run()

    assert store.not_ready_left == 0 and len(store.observed) == 3
    assert store.observed == [(0, {})] * 3, "nothing produced, no offset committed while the store was not ready"
    assert gate.progress.fail_closed_pauses >= 1
    assert world.consumer.seeks, "the gate rewound to the committed offsets"
    assert all(offset == 0 for _, offset in world.consumer.seeks)
    assert sorted(_to(r) for r in world.committed(BASE.topics.allowed)) == [f"ok{i}@example.com" for i in range(4)]
    assert [_suppressed_to_and_reasons(r)[0] for r in world.committed(BASE.topics.suppressed)] == [OPTED_OUT]
    assert world.group_offsets == world.requests.ends() == {0: 2, 1: 3}


class LaggingBarrier(FakeEndOffsets):
    """The preference topic's end offsets; on its ``catch_up_at``-th request the applier has caught up first."""

    def __init__(self, world: World, catch_up_at: int) -> None:
        super().__init__(world.preferences)
        self._world = world
        self._catch_up_at = catch_up_at
        self.requests = 0
        self.behind_answers = 0

    def request(self) -> Any:
        self.requests += 1
        if self.requests == self._catch_up_at:
            self._world.apply_preferences()
        if self._world.store.status().progress.get(0, 0) < self._world.preferences.ends()[0]:
            self.behind_answers += 1
        return super().request()


def test_state_behind_the_freshness_barrier_allows_nothing_until_the_applier_catches_up() -> None:
    world = World(partitions=1)
    world.apply_preferences()  # nothing yet: an empty, ready generation
    world.opt_out("late@example.com")
    world.opt_out(OPTED_OUT)  # acknowledged on the preference topic, not applied yet
    barrier = LaggingBarrier(world, catch_up_at=3)
    world.end_offsets = barrier
    world.send(OPTED_OUT)
    world.send("ok@example.com")
    world.send("late@example.com")
    gate = world.run()

    assert barrier.behind_answers == 2 and gate.progress.fail_closed_pauses >= 2
    assert [_to(r) for r in world.committed(BASE.topics.allowed)] == ["ok@example.com"]
    assert sorted(_suppressed_to_and_reasons(r)[0] for r in world.committed(BASE.topics.suppressed)) == [
        "late@example.com",
        OPTED_OUT,
    ]
    every_allowed = [
        _to(r) for t in [*world.producer.committed, *world.producer.aborted] for r in t.records if r.topic == BASE.topics.allowed
    ]
    assert OPTED_OUT not in every_allowed and "late@example.com" not in every_allowed, "never allowed on stale state"
    assert world.group_offsets == {0: 3}


def test_offsets_never_move_backwards_across_transactions() -> None:
    world = World(batch_max_messages=2, commit_every_messages=3)
    world.opt_out(OPTED_OUT)
    world.apply_preferences()
    for i in range(10):
        world.send(f"ok{i}@example.com" if i % 3 else OPTED_OUT, partition=i % 2)
        if i in (3, 7):
            world.poison(b"\xffnot avro", partition=0)
    world.run()

    calls = world.producer.offset_calls
    assert len(world.producer.committed) >= 3 and len(calls) == len(world.producer.committed)
    for partition in (0, 1):
        seen = [call[partition] for call in calls if partition in call]
        assert seen == sorted(seen) and len(set(seen)) == len(seen), f"partition {partition}: {seen}"
    assert world.group_offsets == world.requests.ends() == {0: 7, 1: 5}
    decided = world.committed(BASE.topics.allowed) + world.committed(BASE.topics.suppressed)
    assert len(decided) == 10 and len(world.committed(BASE.topics.dead_letter)) == 2


def _abortable(message: str) -> KafkaException:
    return KafkaException(KafkaError(KafkaError._STATE, message, fatal=False, retriable=False, txn_requires_abort=True))


def test_a_commit_that_requires_an_abort_rewinds_and_every_record_is_committed_exactly_once() -> None:
    world = World(batch_max_messages=3, commit_every_messages=3)
    world.producer.commit_failures = [_abortable("commit failed (injected)")]
    world.opt_out(OPTED_OUT)
    world.apply_preferences()
    for i in range(9):
        world.send(f"ok{i}@example.com" if i % 4 else OPTED_OUT, partition=i % 2)
    poison_at = world.poison(b"\x00garbage", partition=1)
    gate = world.run()

    assert len(world.producer.aborted) == 1 and world.producer.aborted[0].records, "the failed transaction was aborted"
    assert gate.progress.aborted_transactions == 1 and gate.progress.fail_closed_pauses == 1
    assert world.consumer.seeks, "rewound to the committed offsets"
    allowed = sorted(_to(r) for r in world.committed(BASE.topics.allowed))
    suppressed = [_suppressed_to_and_reasons(r)[0] for r in world.committed(BASE.topics.suppressed)]
    assert allowed == sorted(f"ok{i}@example.com" for i in range(9) if i % 4)
    assert suppressed == [OPTED_OUT] * 3
    dead = world.committed(BASE.topics.dead_letter)
    assert [int(r.headers["sendgate-source-offset"]) for r in dead] == [poison_at]
    assert world.group_offsets == world.requests.ends() == {0: 5, 1: 5}


def test_a_retriable_commit_error_is_retried_in_place_without_an_abort() -> None:
    world = World()
    retriable = KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out (injected)", retriable=True))
    world.producer.commit_failures = [retriable]
    world.apply_preferences()
    for i in range(4):
        world.send(f"ok{i}@example.com", partition=i % 2)
    gate = world.run()

    assert world.producer.aborted == [] and gate.progress.aborted_transactions == 0
    assert world.producer.commit_calls == len(world.producer.committed) + 1
    assert sorted(_to(r) for r in world.committed(BASE.topics.allowed)) == [f"ok{i}@example.com" for i in range(4)]
    assert world.group_offsets == {0: 2, 1: 2}


class SecondWave(FakeConsumer):
    """Delivers what the topic holds; the first time it runs dry, ``wave`` more sends arrive."""

    def __init__(self, world: World, wave: list[str]) -> None:
        super().__init__(world.requests, world.group_offsets)
        self._world = world
        self._wave = wave

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        batch = super().consume(num_messages, timeout)
        if not batch and self._wave:
            for to in self._wave:
                self._world.send(to)
            self._wave = []
        return batch


@pytest.mark.parametrize("when_caught_up", [True, False])
def test_a_gate_that_has_decided_everything_commits_without_waiting_for_the_interval(when_caught_up: bool) -> None:
    world = World(partitions=1, commit_interval_seconds=60.0, commit_when_caught_up=when_caught_up)
    world.apply_preferences()
    world.send("first@example.com")
    world.consumer = SecondWave(world, ["second@example.com"])
    world.run()

    transactions = [[_to(r) for r in t.records] for t in world.producer.committed]
    if when_caught_up:
        assert transactions == [["first@example.com"], ["second@example.com"]], "committed once caught up, not after 60 s"
    else:
        assert transactions == [["first@example.com", "second@example.com"]], "one transaction, committed on the way out"
    assert world.group_offsets == {0: 2}
