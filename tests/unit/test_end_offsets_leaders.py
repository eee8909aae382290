"""End offsets asked of a stale leader are asked again once, after a metadata refresh (no services)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from worker.kafka.offsets import CommittedEndOffsets, OffsetsUnavailable


class RestartedBrokerAdmin:
    """Answers FENCED_LEADER_EPOCH until a metadata request has refreshed the leaders (``fenced_answers`` times)."""

    def __init__(self, *, fenced_answers: int, code: int = KafkaError.FENCED_LEADER_EPOCH) -> None:
        self.fenced_answers = fenced_answers
        self.code = code
        self.metadata_requests = 0
        self.offsets_requests = 0

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        self.metadata_requests += 1
        if self.metadata_requests > 1:  # the first one only names the partitions
            self.fenced_answers -= 1
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: None, 1: None})})

    def list_offsets(self, request, isolation_level, request_timeout):  # type: ignore[no-untyped-def]
        self.offsets_requests += 1
        futures = {}
        for tp in request:
            future: Future = Future()
            if self.fenced_answers > 0:
                future.set_exception(KafkaException(KafkaError(self.code, "Broker: Leader epoch is older")))
            else:
                future.set_result(SimpleNamespace(offset=10 + tp.partition))
            futures[tp] = future
        return futures


def test_a_fenced_leader_epoch_is_answered_after_one_metadata_refresh() -> None:
    admin = RestartedBrokerAdmin(fenced_answers=1)
    assert CommittedEndOffsets(admin, "preferences.changed").read() == {0: 10, 1: 11}  # type: ignore[arg-type]
    assert (admin.metadata_requests, admin.offsets_requests) == (2, 2)


def test_still_stale_after_the_refresh_is_unavailable_and_the_gate_fails_closed() -> None:
    admin = RestartedBrokerAdmin(fenced_answers=5)
    with pytest.raises(OffsetsUnavailable, match="after a metadata refresh"):
        CommittedEndOffsets(admin, "preferences.changed").read()  # type: ignore[arg-type]


def test_other_errors_are_not_asked_again() -> None:
    admin = RestartedBrokerAdmin(fenced_answers=1, code=KafkaError.REQUEST_TIMED_OUT)
    with pytest.raises(OffsetsUnavailable):
        CommittedEndOffsets(admin, "preferences.changed").read()  # type: ignore[arg-type]
    assert admin.offsets_requests == 1
