"""Small stand-ins for confluent-kafka's consumer and messages, for unit tests of the run loops.

They keep only what the loops use: a topic of partitions holding (key, value)
records, group assignment through the subscribe callbacks, positions,
committed offsets that the test can read back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _error: Any = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> Any:
        return self._error

    def headers(self) -> list[tuple[str, bytes]]:
        return []


@dataclass
class FakeTopic:
    """A topic's records by partition; ``append`` is producing."""

    name: str
    partitions: int
    records: dict[int, list[tuple[bytes | None, bytes | None]]] = field(default_factory=dict)

    def append(self, partition: int, key: bytes | None, value: bytes | None) -> int:
        log = self.records.setdefault(partition, [])
        log.append((key, value))
        return len(log) - 1

    def ends(self) -> dict[int, int]:
        return {p: len(self.records.get(p, [])) for p in range(self.partitions)}


class FakeEndOffsets:
    """:class:`worker.kafka.offsets.CommittedEndOffsets` of a :class:`FakeTopic` (nothing transactional)."""

    def __init__(self, topic: FakeTopic) -> None:
        self._topic = topic

    def read(self) -> dict[int, int]:
        return self._topic.ends()

    def request(self) -> Callable[[], dict[int, int]]:
        ends = self._topic.ends()
        return lambda: ends


class FakeConsumer:
    """One group member that is assigned every partition on its first ``consume``."""

    def __init__(self, topic: FakeTopic, group_offsets: dict[int, int]) -> None:
        self._topic = topic
        self.group_offsets = group_offsets  # shared by every consumer of the group, as on a broker
        self._positions: dict[int, int] = {}
        self._callbacks: dict[str, Callable[..., None]] = {}
        self._assigned = False
        self.closed = False
        self.commits: list[tuple[int, int]] = []  # every group commit, in order
        self.seeks: list[tuple[int, int]] = []  # every seek (partition, offset), in order

    def subscribe(self, _topics: list[str], **callbacks: Callable[..., None]) -> None:
        self._callbacks = callbacks

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions[tp.partition] = 0 if tp.offset == OFFSET_BEGINNING else tp.offset

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self._topic.name, p) for p in self._positions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(self._topic.name, tp.partition, self._positions[tp.partition]) for tp in partitions]

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [TopicPartition(self._topic.name, tp.partition, self.group_offsets.get(tp.partition, -1001)) for tp in partitions]

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        for tp in offsets:
            self.group_offsets[tp.partition] = tp.offset
            self.commits.append((tp.partition, tp.offset))

    def seek(self, tp: TopicPartition) -> None:
        offset = 0 if tp.offset == OFFSET_BEGINNING else tp.offset
        self._positions[tp.partition] = offset
        self.seeks.append((tp.partition, offset))

    def consumer_group_metadata(self) -> str:
        return "fake-group-metadata"

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self._assigned:
            self._assigned = True
            self._callbacks["on_assign"](self, [TopicPartition(self._topic.name, p) for p in range(self._topic.partitions)])
            for p in range(self._topic.partitions):  # a callback that did not assign: confluent-kafka assigns for it
                self._positions.setdefault(p, max(self.group_offsets.get(p, 0), 0))
        batch: list[FakeMessage] = []
        for partition, at in sorted(self._positions.items()):
            log = self._topic.records.get(partition, [])
            while at < len(log) and len(batch) < num_messages:
                key, value = log[at]
                batch.append(FakeMessage(self._topic.name, partition, at, key, value))
                at += 1
            self._positions[partition] = at
        if not batch:
            time.sleep(min(timeout, 0.005))  # an idle poll waits a little, as librdkafka's does
        return batch

    def close(self) -> None:
        self.closed = True


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


@dataclass
class Transaction:
    """What one transaction held: its records and every send_offsets_to_transaction call's offsets."""

    records: list[Produced] = field(default_factory=list)
    offsets: list[dict[int, int]] = field(default_factory=list)


class FakeTransactionalProducer:
    """A transactional producer: records each transaction, and on commit moves the group's offsets.

    ``commit_failures`` are raised, one per commit_transaction call, before the
    transaction is committed (librdkafka leaves it open: the caller aborts or retries).
    """

    def __init__(self, group_offsets: dict[int, int], *, commit_failures: list[BaseException] | None = None) -> None:
        self.group_offsets = group_offsets
        self.commit_failures = list(commit_failures or [])
        self.initialized = 0
        self.open: Transaction | None = None
        self.committed: list[Transaction] = []
        self.aborted: list[Transaction] = []
        self.offset_calls: list[dict[int, int]] = []  # every send_offsets_to_transaction, in order
        self.commit_calls = 0

    def init_transactions(self, timeout: float = -1) -> None:
        self.initialized += 1

    def begin_transaction(self) -> None:
        if self.open is not None:
            raise AssertionError("begin_transaction with a transaction open")
        self.open = Transaction()

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None) -> None:
        if self.open is None:
            raise AssertionError("produce outside a transaction")
        self.open.records.append(Produced(topic, key, value, dict(headers or [])))

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], _group: Any, timeout: float = -1) -> None:
        if self.open is None:
            raise AssertionError("send_offsets_to_transaction outside a transaction")
        sent = {tp.partition: tp.offset for tp in offsets}
        self.offset_calls.append(sent)
        self.open.offsets.append(sent)

    def commit_transaction(self, timeout: float = -1) -> None:
        self.commit_calls += 1
        if self.open is None:
            raise AssertionError("commit_transaction outside a transaction")
        if self.commit_failures:
            raise self.commit_failures.pop(0)
        for sent in self.open.offsets:
            self.group_offsets.update(sent)
        self.committed.append(self.open)
        self.open = None

    def abort_transaction(self, timeout: float = -1) -> None:
        if self.open is not None:
            self.aborted.append(self.open)
        self.open = None

    def flush(self, timeout: float = -1) -> int:
        return 0

    def poll(self, timeout: float = -1) -> int:
        return 0

    def purge(self, **_kwargs: Any) -> None:
        return None

    def committed_records(self, topic: str | None = None) -> list[Produced]:
        return [r for t in self.committed for r in t.records if topic is None or r.topic == topic]
