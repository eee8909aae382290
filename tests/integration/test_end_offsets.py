"""The freshness barrier's reader: last stable offsets of preferences.changed, on a real broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from tests.integration.support import wait_until
from worker.config import Settings
from worker.errors import ConfigurationError
from worker.kafka.admin import admin_client
from worker.kafka.clients import transactional_producer_config
from worker.kafka.offsets import CommittedEndOffsets, OffsetsUnavailable

pytestmark = pytest.mark.integration


def first_answer(offsets: CommittedEndOffsets) -> dict[int, int]:
    """Right after topic creation a partition may have no leader yet (retryable): the gate pauses, this waits."""
    answers: list[dict[int, int]] = []

    def answered() -> bool:
        try:
            answers.append(offsets.read())
        except OffsetsUnavailable:
            return False
        return True

    wait_until(answered, timeout=30, message="end offsets of a new topic")
    return answers[-1]


def test_end_offsets_stop_below_an_open_transaction_and_pass_it_once_committed(kafka_topics: Settings) -> None:
    settings = kafka_topics
    topic = settings.topics.preferences
    offsets = CommittedEndOffsets(admin_client(settings), topic)
    assert first_answer(offsets) == dict.fromkeys(range(settings.topics.preference_partitions), 0)
    producer = Producer(transactional_producer_config(settings, transactional_id=f"{topic}-end-offsets-test"))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"x", partition=0)
    producer.flush(10)
    answer = offsets.request()  # sent now, answered when called
    assert answer()[0] == 0, "an open transaction's record lies above the last stable offset"
    producer.commit_transaction(30)
    # The coordinator writes the commit marker just after answering: the barrier passes it shortly.
    wait_until(lambda: offsets.read()[0] == 2, timeout=10, message="last stable offset past the record and its marker")


def test_a_missing_topic_is_a_configuration_error(settings: Settings) -> None:
    offsets = CommittedEndOffsets(admin_client(settings), f"{settings.topics.preferences}-never-created")
    with pytest.raises(ConfigurationError, match="sendgate topics create"):
        offsets.read()


def test_an_unreachable_kafka_is_retryable(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})})
    offsets = CommittedEndOffsets(admin_client(nowhere), settings.topics.preferences, timeout_seconds=1.0)
    with pytest.raises(OffsetsUnavailable):
        offsets.read()
