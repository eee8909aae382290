"""The bare transactional loop: the floor the bench holds the gate against.

The bare loop is the gate's Kafka skeleton with no decode and no state: the
same consumer and producer configurations (``worker.kafka.clients``), batches
from ``consume()``, every record produced with a fixed set of decision
headers, transactions committed on the gate's timer/count with
``send_offsets_to_transaction``. Whatever it reaches is the floor of what any
gate costs on this cluster; :mod:`worker.bench.gate_timing` times the real
gate the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from worker.config import Settings
from worker.errors import KafkaFatal
from worker.gate.outputs import Headers
from worker.kafka.batches import available_batch
from worker.kafka.classification import is_fatal
from worker.kafka.clients import make_consumer, static_member_config, transactional_producer_config
from worker.kafka.messages import next_offsets
from worker.kafka.transactions import commit_due
from worker.runtime import StopSignal

logger = logging.getLogger(__name__)

# What an allowed record carries (SPEC §5); constant here, so producing costs
# what the gate's produce costs without the decision behind it.
HEADERS: Headers = [
    ("sendgate-decision", b"ALLOWED"),
    ("sendgate-policy-version", b"baseline"),
    ("sendgate-decided-at", b"0000000000000"),
    ("sendgate-state", b"gen=baseline;applied=0:0"),
]


@dataclass
class BaselineResult:
    """Records moved; the rate counts those after the first batch, over the time from
    that batch's end to the last commit (how the bench times the gate, too)."""

    records: int = 0
    measured_records: int = 0
    seconds: float = 0.0
    batches: int = 0
    transactions: int = 0

    @property
    def records_per_second(self) -> float:
        return self.measured_records / self.seconds if self.seconds > 0 else 0.0


class BareTransactionalLoop:
    """consume → produce (input key and value, fixed headers) → commit with offsets, nothing else."""

    def __init__(self, *, settings: Settings, input_topic: str, output_topic: str, group_id: str, stop: StopSignal | None = None) -> None:
        self._gate = settings.gate
        self._input = input_topic
        self._output = output_topic
        self._consumer = make_consumer(settings, group_id=group_id, **static_member_config(f"{group_id}-member"))
        self._producer = Producer(transactional_producer_config(settings, transactional_id=f"{group_id}-txn"))
        self._stop = stop or StopSignal()
        self._next_offsets: dict[int, int] = {}
        self._in_transaction = False
        self._transaction_started = 0.0
        self._transaction_messages = 0

    def run(self, *, max_messages: int, timeout_seconds: float = 600.0) -> BaselineResult:
        """Move ``max_messages`` records (or stop after ``timeout_seconds``); the counting mirrors the gate's."""
        result = BaselineResult()
        self._producer.init_transactions(30)
        self._consumer.subscribe([self._input])
        deadline = time.monotonic() + timeout_seconds
        first_done_at: float | None = None
        try:
            while not self._stop.is_set and time.monotonic() < deadline:
                if result.records >= max_messages and not self._in_transaction:
                    break
                # The gate's call pattern (worker/kafka/batches.py), so the two differ only in the work between.
                batch = available_batch(self._consumer, self._gate.batch_max_messages, self._gate.poll_timeout_seconds)
                messages = _usable_messages(batch)
                if messages:
                    self._produce(messages)
                    result.records += len(messages)
                    result.batches += 1
                    if first_done_at is None:
                        first_done_at = time.monotonic()
                        first_batch = len(messages)
                if self._in_transaction and commit_due(
                    self._gate, opened_at=self._transaction_started, records=self._transaction_messages, caught_up=not messages
                ):
                    self._commit()
                    result.transactions += 1
            if self._in_transaction:
                self._commit()
                result.transactions += 1
        except KafkaException as exc:
            raise KafkaFatal(f"baseline loop: {exc.args[0]}") from exc
        finally:
            self._consumer.close()
        if first_done_at is not None:
            result.seconds = time.monotonic() - first_done_at
            result.measured_records = result.records - first_batch
        return result

    def _produce(self, messages: list[Message]) -> None:
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
            self._transaction_started = time.monotonic()
            self._transaction_messages = 0
        produce = self._producer.produce
        output = self._output
        for message in messages:
            while True:
                try:
                    produce(output, value=message.value(), key=message.key(), headers=HEADERS)
                    break
                except BufferError:
                    self._producer.poll(0.05)
        self._next_offsets.update(next_offsets(messages))
        self._transaction_messages += len(messages)

    def _commit(self) -> None:
        offsets = [TopicPartition(self._input, p, o) for p, o in self._next_offsets.items()]
        if offsets:
            self._producer.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata(), 30)
        self._producer.commit_transaction(60)
        self._in_transaction = False
        self._next_offsets.clear()


def _usable_messages(batch: list[Message]) -> list[Message]:
    """The gate's intake pattern (``Gate._accepted``): one pass of a C call a message, message by message only on an error."""
    messages = [m for m in batch if m.error() is None]
    if len(messages) < len(batch):
        messages = [m for m in batch if _usable(m)]
    return messages


def _usable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if is_fatal(error):
        raise KafkaFatal(f"baseline consumer: {error}")
    if error.code() != KafkaError._PARTITION_EOF:
        logger.warning("baseline consumer error", extra={"error": str(error)})
    return False
