"""Replacing a stuck chaos traffic producer loses and doubles nothing (real Kafka, shared stack)."""

from __future__ import annotations

from collections import Counter

from tests.chaos.stalled_producer import positions_by_key
from tests.chaos.workload import Audience, Ledger, SendProducer, Traffic
from worker.codec import AvroCodec


def test_a_replaced_producer_writes_each_record_once_whether_it_was_queued_in_flight_or_delivered(kafka_topics):
    settings = kafka_topics
    ledger = Ledger()
    traffic = Traffic(Audience.create(ledger.run_id, 50), ledger, seed=3)
    sends = SendProducer(settings, AvroCodec.from_settings(settings), ledger)
    for _ in range(300):
        sends.send(traffic.next_send())
    sends.flush()  # these are delivered before the replacement: it must leave them alone
    for _ in range(3000):  # queued or in flight when the producer is replaced
        sends.send(traffic.next_send())
    sends._replace()
    for _ in range(300):
        sends.send(traffic.next_send())
    sends.flush()

    assert sends.replacements == 1
    assert sends.purged_total > 0, "nothing was left to take back: the replacement was not exercised"
    records = list(ledger.sends.values())
    assert len(records) == 3600
    assert ledger.undelivered() == []
    in_topic = positions_by_key(settings.kafka.common_config(), settings.topics.requested, ledger.sends)
    assert set(in_topic) == set(ledger.sends), "a record is missing from sends.requested"
    assert {r.message_id: (r.partition, r.offset) for r in records} == in_topic, "the ledger names a position the topic does not hold"
    counts = Counter(key for key in _every_key(settings))
    assert [key for key, n in counts.items() if n > 1] == [], "a record was written twice"


def _every_key(settings) -> list[str]:  # type: ignore[no-untyped-def]
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.topics.requested
    consumer = Consumer({**settings.kafka.common_config(), "group.id": "keys-" + topic, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        keys: list[str] = []
        while len(keys) < sum(ends.values()):
            keys += [m.key().decode() for m in consumer.consume(10_000, timeout=2.0) if m.error() is None]
        return keys
    finally:
        consumer.close()
