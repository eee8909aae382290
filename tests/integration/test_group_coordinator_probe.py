"""The fresh-client probe against real Kafka, while a transaction holds the group's offsets open."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from worker.config import Settings
from worker.kafka.clients import consumer_config, group_coordinator_answers, transactional_producer_config


def test_offsets_held_by_an_open_transaction_are_unstable_yet_the_coordinator_is_seen_to_serve(kafka_topics: Settings) -> None:
    settings = kafka_topics
    group = f"{settings.gate.group_id}-probe"
    topic = settings.topics.requested
    producer = Producer(transactional_producer_config(settings, transactional_id=f"probe-{uuid.uuid4().hex[:8]}"))
    member = Consumer(consumer_config(settings, group_id=group))
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.send_offsets_to_transaction([TopicPartition(topic, 0, 1)], member.consumer_group_metadata(), 30)
        # Open, as while our commit_transaction blocks: the stable question waits for it, the other does not.
        assert not group_coordinator_answers(settings, group_id=group, topic=topic, partitions={0}, timeout=1.5)
        assert group_coordinator_answers(settings, group_id=group, topic=topic, partitions={0}, timeout=10, require_stable=False)
        producer.abort_transaction(30)
        assert group_coordinator_answers(settings, group_id=group, topic=topic, partitions={0}, timeout=10)
    finally:
        member.close()
