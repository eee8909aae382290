"""Each error path ends in one kind of worker.errors, and a command exits with that kind's code."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from confluent_kafka import KafkaError, KafkaException

from worker import terminal
from worker.codec.errors import SchemaRegistryUnavailable
from worker.errors import (
    ConfigurationError,
    ExitCode,
    KafkaFatal,
    KafkaRetriable,
    ProducerFenced,
    RetryableError,
    SendgateError,
    ServiceUnreachable,
    TransactionAborted,
)
from worker.kafka import auth
from worker.kafka.classification import classify, is_fatal, is_fenced, kafka_error
from worker.kafka.offsets import OffsetsUnavailable
from worker.kafka.recovery import ProducerFatal
from worker.metrics import Metrics
from worker.state.errors import (
    GenerationLost,
    IncompatibleLayout,
    OlderLayout,
    ProgressConflict,
    StateChanged,
    StateNotReady,
    StateUnavailable,
)


@pytest.fixture(autouse=True)
def no_earlier_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_last_failure", None)


def error(code: int, *, fatal: bool = False, retriable: bool = False, txn_requires_abort: bool = False) -> KafkaError:
    return KafkaError(code, "test", fatal=fatal, retriable=retriable, txn_requires_abort=txn_requires_abort)


def classified(kafka: KafkaError) -> SendgateError:
    return classify(KafkaException(kafka), what="call", metrics=Metrics())


# -- classification -------------------------------------------------------------
@pytest.mark.parametrize(
    "code",
    [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED],
)
def test_a_fence_is_producer_fenced_even_when_librdkafka_calls_it_fatal(code: int) -> None:
    assert is_fenced(error(code))
    assert type(classified(error(code, fatal=True))) is ProducerFenced


def test_fatal_is_fatal_also_when_reported_as_the_fatal_code_without_the_flag() -> None:
    assert is_fatal(error(KafkaError._STATE, fatal=True))
    assert is_fatal(error(KafkaError._FATAL))
    assert not is_fatal(error(KafkaError._TRANSPORT, retriable=True))
    assert type(classified(error(KafkaError._FATAL))) is ProducerFatal
    assert isinstance(classified(error(KafkaError._STATE, fatal=True)), KafkaFatal)


def test_retriable_without_abort_is_kafka_retriable_and_anything_else_aborts() -> None:
    assert type(classified(error(KafkaError._TIMED_OUT, retriable=True))) is KafkaRetriable
    assert type(classified(error(KafkaError._STATE, retriable=True, txn_requires_abort=True))) is TransactionAborted
    assert type(classified(error(KafkaError._STATE))) is TransactionAborted


def test_every_classification_is_a_kind_of_the_hierarchy_and_counted() -> None:
    metrics = Metrics()
    kind = classify(KafkaException(error(KafkaError._TIMED_OUT, retriable=True)), what="call", metrics=metrics)
    assert isinstance(kind, RetryableError)
    assert metrics.registry.get_sample_value("sendgate_kafka_errors_total", {"kind": "_TIMED_OUT"}) == 1


def test_a_kafka_exception_without_a_kafka_error_aborts_the_transaction() -> None:
    assert kafka_error(KafkaException("no error object")) is None
    assert kafka_error(ValueError("x")) is None
    assert type(classify(KafkaException("no error object"), what="call", metrics=Metrics())) is TransactionAborted


# -- where each kind lives, and its exit code ------------------------------------
KINDS_BY_FAMILY: dict[type[SendgateError], list[type[SendgateError]]] = {
    RetryableError: [StateUnavailable, StateNotReady, GenerationLost, ProgressConflict, TransactionAborted, KafkaRetriable,
                     OffsetsUnavailable, SchemaRegistryUnavailable],
    StateNotReady: [OlderLayout],
    StateChanged: [GenerationLost, ProgressConflict],
    ConfigurationError: [IncompatibleLayout],
    KafkaFatal: [ProducerFatal],
}
KINDS_BY_EXIT_CODE: dict[ExitCode, list[type[SendgateError]]] = {
    ExitCode.UNREACHABLE: [StateUnavailable, KafkaRetriable, OffsetsUnavailable, SchemaRegistryUnavailable],
    ExitCode.STATE_FATAL: [StateNotReady, OlderLayout, GenerationLost, ProgressConflict],
    ExitCode.KAFKA_FATAL: [TransactionAborted, ProducerFatal],
    ExitCode.CONFIG: [IncompatibleLayout],
}


def test_each_kind_belongs_to_its_family() -> None:
    for family, kinds in KINDS_BY_FAMILY.items():
        assert [kind for kind in kinds if not issubclass(kind, family)] == [], family


def test_each_kind_exits_with_its_code() -> None:
    for code, kinds in KINDS_BY_EXIT_CODE.items():
        assert {kind: kind("x").exit_code for kind in kinds} == dict.fromkeys(kinds, code)  # type: ignore[attr-defined]


# -- run_guarded: a command's exit code -------------------------------------------
def exit_code_of(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> tuple[Any, str]:
    def action() -> None:
        raise exc

    with pytest.raises(SystemExit) as exited:
        terminal.run_guarded(action)
    return exited.value.code, " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (StateNotReady("store rebuilding"), ExitCode.STATE_FATAL),
        (GenerationLost("generation changed"), ExitCode.STATE_FATAL),
        (StateUnavailable("Redis down"), ExitCode.UNREACHABLE),
        (TransactionAborted("still failing after 20 retries"), ExitCode.KAFKA_FATAL),
        (OffsetsUnavailable("no offsets"), ExitCode.UNREACHABLE),
        (ProducerFenced("fenced"), ExitCode.FENCED),
        (ServiceUnreachable("no Kafka"), ExitCode.UNREACHABLE),
        (SendgateError("plain"), ExitCode.FAILURE),
    ],
)
def test_an_escaped_error_exits_with_the_code_of_its_kind(exc: BaseException, code: ExitCode, capsys: pytest.CaptureFixture[str]) -> None:
    exited, said = exit_code_of(exc, capsys)
    assert exited == code
    assert str(exc) in said


@pytest.mark.parametrize(
    ("kafka", "code"),
    [
        (error(KafkaError._FENCED), ExitCode.FENCED),
        (error(KafkaError.PRODUCER_FENCED, fatal=True), ExitCode.FENCED),
        (error(KafkaError._FATAL), ExitCode.KAFKA_FATAL),
        (error(KafkaError._STATE, fatal=True), ExitCode.KAFKA_FATAL),
        (error(KafkaError._TRANSPORT, retriable=True), ExitCode.UNREACHABLE),
    ],
)
def test_a_raw_kafka_exception_exits_by_the_same_classification(
    kafka: KafkaError, code: ExitCode, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code_of(KafkaException(kafka), capsys)[0] == code


def test_a_raw_redis_error_is_an_unreachable_redis(capsys: pytest.CaptureFixture[str]) -> None:
    code, said = exit_code_of(redis.ConnectionError("refused"), capsys)
    assert code == ExitCode.UNREACHABLE and "Redis unreachable" in said
