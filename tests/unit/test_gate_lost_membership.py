"""Partitions lost, then given back: the gate builds a fresh producer before its next transaction.

After a broker restart the old producer's first send_offsets_to_transaction
often hangs (librdkafka #5456); the gate no longer waits for the stuck-call
watch to notice. Fake Kafka, in-memory store (see test_gate_loop).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from tests.unit.kafka_fakes import FakeConsumer, FakeMessage, FakeTransactionalProducer
from tests.unit.test_gate_loop import CODEC, OPTED_OUT, MemoryFreshStateReader, World, _to
from worker.gate.pipeline import Gate
from worker.health import Health
from worker.runtime import StopSignal


class LosesItsPartitionsOnce(FakeConsumer):
    """After ``lose_after`` consumes, the group takes every partition away (lost) and, ``give_back`` later, assigns them again."""

    def __init__(self, *args: Any, lose_after: int, give_back: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lose_after = lose_after
        self.give_back = give_back
        self.calls = 0

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.calls += 1
        if self.calls == self.lose_after:
            everything = [TopicPartition(self._topic.name, p) for p in range(self._topic.partitions)]
            self._callbacks["on_lost"](self, everything)
            self._positions.clear()
            if self.give_back:
                self._callbacks["on_assign"](self, everything)
                for p in range(self._topic.partitions):
                    self._positions[p] = max(self.group_offsets.get(p, 0), 0)
            return []
        return super().consume(num_messages, timeout)


def run_gate(world: World, consumer: FakeConsumer) -> tuple[Gate, list[FakeTransactionalProducer]]:
    built: list[FakeTransactionalProducer] = []

    def new_producer() -> FakeTransactionalProducer:
        built.append(FakeTransactionalProducer(world.group_offsets))
        return built[-1]

    gate = Gate(
        settings=world.settings,
        consumer=consumer,  # type: ignore[arg-type]
        producer=world.producer,  # type: ignore[arg-type]
        codec=CODEC,
        state=MemoryFreshStateReader(
            store=world.store,
            end_offsets=world.end_offsets,
            metrics=world.metrics,
            barrier_timeout_seconds=world.settings.gate.barrier_timeout_seconds,
        ),
        metrics=world.metrics,
        health=Health(world.metrics),
        stop=StopSignal(),
        consumer_factory=lambda: consumer,  # type: ignore[arg-type,return-value]
        producer_factory=new_producer,  # type: ignore[arg-type,return-value]
    )
    gate.run(idle_exit_seconds=0.3)
    return gate, built


def fill(world: World, sends: int) -> None:
    world.opt_out(OPTED_OUT)
    world.apply_preferences()
    for n in range(sends):
        world.send(OPTED_OUT if n % 4 == 0 else f"ok{n}@example.com", partition=n % 2)


def test_partitions_lost_then_given_back_build_a_fresh_producer_and_every_send_is_decided_once() -> None:
    world = World(batch_max_messages=5)
    fill(world, 40)
    consumer = LosesItsPartitionsOnce(world.requests, world.group_offsets, lose_after=4, give_back=True)
    _gate, built = run_gate(world, consumer)

    assert len(built) == 1, "one fresh producer after the partitions came back"
    fresh = built[0]
    assert fresh.initialized == 1
    old = world.producer
    # The old producer's transaction open at the loss was aborted, and it began none after.
    assert old.aborted and old.open is None
    decided_before = len(old.committed_records())
    assert decided_before < 40, "the loss must land mid-stream"
    assert fresh.committed, "the fresh producer committed the rest"
    producers = [old, fresh]
    allowed = [r for p in producers for r in p.committed_records(world.settings.topics.allowed)]
    suppressed = [r for p in producers for r in p.committed_records(world.settings.topics.suppressed)]
    keys = sorted(r.key for r in allowed + suppressed)  # type: ignore[type-var]
    assert keys == sorted(f"k{n}".encode() for n in range(40)), "every send decided exactly once"
    assert all(_to(r) != OPTED_OUT for r in allowed)
    assert world.metrics.kafka_recoveries.labels(worker="gate", client="producer")._value.get() == 1


def test_partitions_lost_and_not_given_back_build_no_producer() -> None:
    """Until the group assigns partitions again, another live process may hold our instance id: no epoch bump."""
    world = World(batch_max_messages=5)
    fill(world, 20)
    consumer = LosesItsPartitionsOnce(world.requests, world.group_offsets, lose_after=3, give_back=False)
    _gate, built = run_gate(world, consumer)
    assert built == []
    assert world.producer.aborted, "the open transaction was aborted at the loss"
