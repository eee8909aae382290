"""A rewind that times out: the consumer that lost its coordinator is told apart from a broker still loading."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.config import Settings
from worker.errors import TransactionAborted
from worker.gate import pipeline
from worker.gate.pipeline import Gate
from worker.kafka import clients
from worker.kafka.recovery import ConsumerFatal


class TimingOutConsumer:
    """Holds one partition; its committed() never gets an answer."""

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("sends.requested", 0)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets: Local: Timed out"))


def _gate() -> Gate:
    # Only what _rewind_or_raise reads: no clients, no I/O.
    gate = Gate.__new__(Gate)
    gate._settings = Settings()
    gate._consumer = TimingOutConsumer()  # type: ignore[assignment]
    gate._assigned = {0}
    gate._rewind_timeouts = 0
    return gate


def test_a_fresh_client_answered_means_our_consumer_lost_its_coordinator_and_is_recreated_at_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(pipeline, "coordinator_answers_others", lambda settings, *, partitions, timeout: True)
    with pytest.raises(ConsumerFatal, match="a new client is answered"):
        _gate()._rewind_or_raise("an abort")


def test_a_broker_answering_nobody_is_waited_for_then_the_consumer_is_recreated_anyway(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(pipeline, "coordinator_answers_others", lambda settings, *, partitions, timeout: False)
    gate = _gate()
    with pytest.raises(TransactionAborted):
        gate._rewind_or_raise("an abort")
    with pytest.raises(ConsumerFatal, match="timed out 2 times in a row"):
        gate._rewind_or_raise("an abort")


# --- a gate without partitions (the watch itself: test_membership_watch.py) ----------


def test_a_gate_left_without_partitions_and_coordinator_recreates_its_consumer_when_others_are_served(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(clients, "group_coordinator_answers", lambda *a, **k: True)
    gate = _gate()
    gate._assigned = set()
    gate._membership = clients.MembershipWatch(
        gate._settings, group_id="g", topic="sends.requested", after_seconds=0.0, timeout=0.1
    )
    with pytest.raises(ConsumerFatal, match="without partitions and without a coordinator"):
        gate._check_membership_when_idle()
