"""The restart watch's probes against the shared Kafka, and against a port where nothing listens."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.chaos.resume import BrokerAnswers


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"  # closed again when the block ends: connections are refused


def test_a_running_broker_answers_metadata_and_its_group_coordinator_the_offset_fetch(kafka_topics):
    settings = kafka_topics
    answers = BrokerAnswers(settings.kafka.bootstrap_servers, group=settings.gate.group_id, topic=settings.topics.requested)
    assert not answers._refused()
    assert answers._answers()
    assert _answers_within(answers._coordinator_answers, seconds=30.0)


def _answers_within(probe: Callable[[], bool], *, seconds: float) -> bool:
    # On a fresh broker the first FindCoordinator creates __consumer_offsets, which outlasts one
    # 0.5 s probe; the restart watch probes in a loop for the same reason.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.2)
    return False


def test_a_stopped_broker_is_refused_and_answers_neither_probe():
    answers = BrokerAnswers(_closed_port(), group="no-group", topic="no-topic")
    assert answers._refused()
    assert not answers._answers()
    assert not answers._coordinator_answers()


def test_the_watch_records_no_return_of_a_broker_that_stays_away():
    answers = BrokerAnswers(_closed_port(), group="no-group", topic="no-topic")
    answers.__enter__()
    assert answers.coordinator_back(timeout=1.0) is None
    assert answers.down_at is not None, "the refused port was seen"
    assert answers.back_at is None
