"""Bringing the chaos traffic producer back when librdkafka has lost every broker for good.

A single broker that is stopping answers a metadata request with no brokers
at all; librdkafka then decommissions the only broker it knows. Without a
re-bootstrap it never connects again, and even with one (2 s trigger) the
test's producer once stayed dark for the rest of a 20-restart run ("95877
send requests not acknowledged") while the workers went on. The producer is
the test's, not the system under test, so the harness replaces it; what
matters is that this loses and doubles nothing in ``sends.requested``:

* the stuck producer's records are purged (their reports say so) instead of
  being abandoned to deliver later;
* a purged record may still have reached the topic (it was in flight), so the
  topic is read back by key (every key is a run-unique message id) and only
  the records absent from it are produced again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, TopicPartition

# No delivery report for this long while records wait: the producer is stuck
# (a healthy one reports within a second; a broker restart takes 5-17 s here).
STALL_SECONDS = 30.0
PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


def is_purged(error: KafkaError) -> bool:
    return error.code() in PURGED


def positions_by_key(config: dict[str, object], topic: str, keys: Iterable[str], *, timeout: float = 120.0) -> dict[str, tuple[int, int]]:
    """Where each of ``keys`` sits in ``topic`` (partition, offset), reading every partition to its end."""
    wanted = set(keys)
    found: dict[str, tuple[int, int]] = {}
    consumer = Consumer(
        {
            **config,
            "group.id": f"chaos-readback-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",  # sends.requested is written without transactions
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while remaining:
            assert time.monotonic() < deadline, f"reading {topic} back did not reach its end in {timeout:g} s"
            for message in consumer.consume(10_000, timeout=1.0):
                if message.error() is not None:
                    continue
                key = (message.key() or b"").decode()
                if key in wanted:
                    found[key] = (message.partition(), message.offset())
                if message.offset() + 1 >= ends[message.partition()]:
                    remaining.discard(message.partition())
    finally:
        consumer.close()
    return found
