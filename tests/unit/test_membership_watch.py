"""MembershipWatch: a consumer left behind by a broker restart is told apart from one that merely holds no partition."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.config import Settings
from worker.kafka import clients
from worker.kafka.clients import MembershipWatch

AFTER_SECONDS = 3.0


class TimingOutConsumer:
    """Its committed() never gets an answer: the consumer lost its group coordinator."""

    def __init__(self) -> None:
        self.asked = 0

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked += 1
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets: Local: Timed out"))


class AnsweringConsumer(TimingOutConsumer):
    """Its group coordinator answers: others hold every partition."""

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.asked += 1
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in partitions]


def _watch(*, unassigned_for: float) -> MembershipWatch:
    watch = MembershipWatch(Settings(), group_id="g", topic="sends.requested", after_seconds=AFTER_SECONDS, timeout=0.1)
    watch._assigned_seen_at = time.monotonic() - unassigned_for
    return watch


def _fresh_client_answers(monkeypatch: pytest.MonkeyPatch, answered: bool) -> list[dict[str, Any]]:
    asked: list[dict[str, Any]] = []

    def answers(settings: Settings, **kwargs: Any) -> bool:
        asked.append(kwargs)
        return answered

    monkeypatch.setattr(clients, "group_coordinator_answers", answers)
    return asked


def test_without_partitions_nor_coordinator_a_consumer_is_left_behind_if_a_fresh_client_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _fresh_client_answers(monkeypatch, True)
    lost = _watch(unassigned_for=AFTER_SECONDS + 1).left_behind(TimingOutConsumer(), assigned=False)  # type: ignore[arg-type]
    assert lost is not None and "Timed out" in lost
    assert asked == [{"group_id": "g", "topic": "sends.requested", "partitions": {0}, "timeout": 0.1}]


def test_a_consumer_without_partitions_is_not_left_behind_while_the_broker_serves_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_client_answers(monkeypatch, False)
    assert _watch(unassigned_for=AFTER_SECONDS + 1).left_behind(TimingOutConsumer(), assigned=False) is None  # type: ignore[arg-type]


def test_a_consumer_whose_coordinator_answers_is_left_alone_and_asked_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _fresh_client_answers(monkeypatch, True)
    consumer = AnsweringConsumer()
    watch = _watch(unassigned_for=AFTER_SECONDS + 1)
    assert watch.left_behind(consumer, assigned=False) is None  # type: ignore[arg-type]
    assert watch.left_behind(consumer, assigned=False) is None  # type: ignore[arg-type]
    assert consumer.asked == 1
    assert asked == [], "a fresh client is asked only when our consumer is not answered"


def test_a_consumer_that_just_lost_its_partitions_or_holds_some_asks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_client_answers(monkeypatch, True)
    consumer = TimingOutConsumer()
    assert _watch(unassigned_for=AFTER_SECONDS - 1).left_behind(consumer, assigned=False) is None  # type: ignore[arg-type]
    holding = _watch(unassigned_for=60)
    assert holding.left_behind(consumer, assigned=True) is None  # type: ignore[arg-type]
    assert holding.left_behind(consumer, assigned=False) is None, "holding partitions restarts the interval"  # type: ignore[arg-type]
    assert consumer.asked == 0
