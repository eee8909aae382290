"""A rebuilt producer's first init_transactions: what it raises decides between another rebuild and an exit."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from worker.errors import ExitCode, TransactionAborted
from worker.gate.recovery import init_transactions_until_ready
from worker.kafka.recovery import ProducerFatal
from worker.metrics import Metrics
from worker.runtime import StopSignal


class InitFails:
    def __init__(self, *errors: KafkaException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def init_transactions(self, timeout: float) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def _error(code: int, *, fatal: bool = False, retriable: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "test", fatal=fatal, retriable=retriable))


def test_a_fence_on_the_first_init_builds_another_producer_instead_of_exiting() -> None:
    producer = InitFails(_error(KafkaError._FENCED, fatal=True))
    with pytest.raises(ProducerFatal, match="first init_transactions") as raised:
        init_transactions_until_ready(producer, metrics=Metrics(), stop=StopSignal())  # type: ignore[arg-type]
    assert raised.value.exit_code == ExitCode.KAFKA_FATAL, "and exit 11, not 10, once the rebuild budget is spent"


def test_a_timeout_is_tried_again_on_the_same_producer() -> None:
    producer = InitFails(_error(KafkaError._TIMED_OUT, retriable=True))
    init_transactions_until_ready(producer, metrics=Metrics(), stop=StopSignal())  # type: ignore[arg-type]
    assert producer.calls == 2


def test_another_fatal_error_is_raised_as_it_is() -> None:
    producer = InitFails(_error(KafkaError._FATAL, fatal=True))
    with pytest.raises(ProducerFatal) as raised:
        init_transactions_until_ready(producer, metrics=Metrics(), stop=StopSignal())  # type: ignore[arg-type]
    assert "first init_transactions" not in str(raised.value)
    assert not isinstance(raised.value, TransactionAborted)
