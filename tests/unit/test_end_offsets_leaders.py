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


class SilentAdmin:
    """An admin client that has lost every broker: offsets requests are never answered."""

    def __init__(self) -> None:
        self.offsets_requests = 0

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: None})})

    def list_offsets(self, request, isolation_level, request_timeout):  # type: ignore[no-untyped-def]
        self.offsets_requests += 1
        return {tp: Future() for tp in request}  # never resolved


def test_an_answer_that_never_comes_is_unavailable_within_the_timeout_and_its_margin() -> None:
    import time

    offsets = CommittedEndOffsets(SilentAdmin(), "preferences.changed", timeout_seconds=0.2)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(OffsetsUnavailable, match="no answer"):
        offsets.read()
    assert time.monotonic() - started < 0.2 + 2.0 + 1.0


def test_a_client_that_answers_nothing_twice_in_a_row_is_replaced_and_the_new_one_is_asked() -> None:
    silent, answering = SilentAdmin(), RestartedBrokerAdmin(fenced_answers=0)
    made: list[object] = []

    def renew():  # type: ignore[no-untyped-def]
        made.append(answering)
        return answering

    offsets = CommittedEndOffsets(silent, "preferences.changed", timeout_seconds=0.05, renew=renew)  # type: ignore[arg-type]
    with pytest.raises(OffsetsUnavailable):
        offsets.read()
    assert made == []  # one silence is not enough: a restarting broker is slow to answer too
    with pytest.raises(OffsetsUnavailable):
        offsets.read()
    assert made == [answering] and offsets.renewals == 1
    assert offsets.read() == {0: 10, 1: 11}
    assert silent.offsets_requests == 2


def test_an_answer_resets_the_count_of_silences() -> None:
    class Flaky(SilentAdmin):
        def list_offsets(self, request, isolation_level, request_timeout):  # type: ignore[no-untyped-def]
            self.offsets_requests += 1
            if self.offsets_requests % 2 == 0:
                return RestartedBrokerAdmin(fenced_answers=0).list_offsets(request, isolation_level, request_timeout)
            return {tp: Future() for tp in request}

    renewals: list[int] = []
    offsets = CommittedEndOffsets(Flaky(), "preferences.changed", timeout_seconds=0.05, renew=lambda: renewals.append(1))  # type: ignore[arg-type,func-returns-value]
    for _ in range(3):
        with pytest.raises(OffsetsUnavailable):
            offsets.read()
        assert offsets.read() == {0: 10}
    assert renewals == []


def test_a_client_that_knows_no_leader_twice_in_a_row_is_replaced() -> None:
    no_leaders = RestartedBrokerAdmin(fenced_answers=10**6, code=KafkaError._NOENT)
    answering = RestartedBrokerAdmin(fenced_answers=0)
    made: list[object] = []

    def renew():  # type: ignore[no-untyped-def]
        made.append(answering)
        return answering

    offsets = CommittedEndOffsets(no_leaders, "preferences.changed", renew=renew)  # type: ignore[arg-type]
    with pytest.raises(OffsetsUnavailable):
        offsets.read()
    assert made == []
    with pytest.raises(OffsetsUnavailable):
        offsets.read()
    assert made == [answering] and offsets.renewals == 1
    assert offsets.read() == {0: 10, 1: 11}
