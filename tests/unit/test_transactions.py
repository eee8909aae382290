"""Kafka error classification: retriable → retried, abortable → aborted, fenced/fatal → named exit."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from worker.config import GateSettings
from worker.errors import ExitCode, ProducerFenced, TransactionAborted
from worker.kafka.recovery import ProducerFatal
from worker.kafka.transactions import call_kafka, commit_due
from worker.metrics import Metrics


def kafka_error(code: int, *, fatal: bool = False, retriable: bool = False, txn_requires_abort: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "test", fatal=fatal, retriable=retriable, txn_requires_abort=txn_requires_abort))


class Flaky:
    def __init__(self, failures: list[KafkaException]) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def test_retriable_errors_are_retried_until_the_call_succeeds(monkeypatch):
    monkeypatch.setattr("worker.kafka.transactions.time.sleep", lambda _s: None)
    operation = Flaky([kafka_error(KafkaError.REQUEST_TIMED_OUT, retriable=True)] * 3)
    assert call_kafka(operation, what="commit", metrics=Metrics()) == "done"
    assert operation.calls == 4


def test_an_abortable_error_asks_for_an_abort():
    with pytest.raises(TransactionAborted):
        call_kafka(Flaky([kafka_error(KafkaError._STATE, txn_requires_abort=True)]), what="commit", metrics=Metrics())


def test_a_retriable_error_that_also_requires_an_abort_is_aborted_not_retried():
    operation = Flaky([kafka_error(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True, txn_requires_abort=True)])
    with pytest.raises(TransactionAborted):
        call_kafka(operation, what="commit", metrics=Metrics())
    assert operation.calls == 1


@pytest.mark.parametrize("code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH])
def test_fencing_is_fatal_with_its_own_exit_code(code):
    with pytest.raises(ProducerFenced) as raised:
        call_kafka(Flaky([kafka_error(code, fatal=True)]), what="commit", metrics=Metrics())
    assert raised.value.exit_code == ExitCode.FENCED


def test_other_fatal_errors_ask_for_a_rebuilt_producer_or_exit_with_the_kafka_fatal_code():
    with pytest.raises(ProducerFatal) as raised:
        call_kafka(Flaky([kafka_error(KafkaError._FATAL, fatal=True)]), what="init", metrics=Metrics())
    assert raised.value.exit_code == ExitCode.KAFKA_FATAL


def test_retries_are_bounded(monkeypatch):
    monkeypatch.setattr("worker.kafka.transactions.time.sleep", lambda _s: None)
    operation = Flaky([kafka_error(KafkaError.REQUEST_TIMED_OUT, retriable=True)] * 100)
    with pytest.raises(TransactionAborted, match="still failing"):
        call_kafka(operation, what="commit", metrics=Metrics())


def test_errors_are_counted_by_kind():
    metrics = Metrics()
    with pytest.raises(TransactionAborted):
        call_kafka(Flaky([kafka_error(KafkaError._STATE, txn_requires_abort=True)]), what="commit", metrics=metrics)
    assert metrics.registry.get_sample_value("sendgate_kafka_errors_total", {"kind": "_STATE"}) == 1


def test_a_call_that_hangs_past_its_timeout_is_abandoned_so_the_producer_is_rebuilt(monkeypatch):
    import threading

    import worker.kafka.transactions as transactions

    released = threading.Event()
    monkeypatch.setattr(transactions, "WATCHDOG_MARGIN_SECONDS", 0.05)
    try:
        with pytest.raises(ProducerFatal, match="#5456") as raised:
            call_kafka(lambda: released.wait(5), what="send_offsets_to_transaction", metrics=Metrics(), timeout=0.05)
        assert raised.value.exit_code == ExitCode.KAFKA_FATAL  # if the rebuild budget is spent
    finally:
        released.set()


def test_a_call_that_returns_in_time_gives_its_result_and_its_errors():
    assert call_kafka(lambda: "ok", what="commit", metrics=Metrics(), timeout=1) == "ok"
    with pytest.raises(TransactionAborted):
        call_kafka(Flaky([kafka_error(KafkaError._STATE, txn_requires_abort=True)]), what="commit", metrics=Metrics(), timeout=1)


def test_the_time_limit_bounds_a_call_and_all_its_retries(monkeypatch):
    import threading

    import worker.kafka.transactions as transactions

    released = threading.Event()
    monkeypatch.setattr(transactions, "WATCHDOG_MARGIN_SECONDS", 0.2)
    monkeypatch.setattr(transactions.time, "sleep", lambda _s: released.wait(0.05))
    timing_out = Flaky([kafka_error(KafkaError._TIMED_OUT, retriable=True)] * 1000)
    try:
        with pytest.raises(ProducerFatal):
            call_kafka(timing_out, what="send_offsets_to_transaction", metrics=Metrics(), timeout=0.05)
    finally:
        released.set()


def test_a_blocked_call_is_abandoned_a_grace_after_a_fresh_client_is_answered(monkeypatch):
    import threading

    import worker.kafka.transactions as transactions

    released = threading.Event()
    monkeypatch.setattr(transactions, "STUCK_PROBE_AFTER_SECONDS", 0.05)
    started = time.monotonic()
    try:
        with pytest.raises(ProducerFatal, match="after a fresh client was answered"):
            call_kafka(
                lambda: released.wait(10), what="send_offsets_to_transaction", metrics=Metrics(), timeout=5, stuck_if=lambda: True
            )
    finally:
        released.set()
    assert time.monotonic() - started < 5, "abandoned before the call's own timeout"


def test_a_blocked_call_waits_out_its_timeout_while_no_fresh_client_is_answered_either(monkeypatch):
    import threading

    import worker.kafka.transactions as transactions

    released = threading.Event()
    asked: list[float] = []
    monkeypatch.setattr(transactions, "STUCK_PROBE_AFTER_SECONDS", 0.05)
    monkeypatch.setattr(transactions, "WATCHDOG_MARGIN_SECONDS", 0.05)
    started = time.monotonic()
    try:
        with pytest.raises(ProducerFatal, match=r"with a 0\.3 s timeout"):
            call_kafka(
                lambda: released.wait(10),
                what="send_offsets_to_transaction",
                metrics=Metrics(),
                timeout=0.3,
                stuck_if=lambda: asked.append(time.monotonic()) is not None,  # not answered
            )
    finally:
        released.set()
    assert asked, "a fresh client was asked"
    assert time.monotonic() - started >= 0.35, "held to the full limit"


def test_a_call_that_finishes_while_the_fresh_client_is_asked_keeps_its_result(monkeypatch):
    import threading

    import worker.kafka.transactions as transactions

    finished = threading.Event()
    monkeypatch.setattr(transactions, "STUCK_PROBE_AFTER_SECONDS", 0.01)

    def answered_after_the_call_finished() -> bool:
        finished.set()
        time.sleep(0.1)
        return True

    result = call_kafka(
        lambda: "done" if finished.wait(5) else "late",
        what="send_offsets_to_transaction",
        metrics=Metrics(),
        timeout=5,
        stuck_if=answered_after_the_call_finished,
    )
    assert result == "done"


# -- the gate's clients across a broker restart (worker/kafka/clients.py) -------------


def test_the_gate_clients_neither_rebootstrap_nor_back_off_long_after_a_broker_restart(monkeypatch):
    """Re-bootstrapping left send_offsets_to_transaction waiting for a decommissioned
    coordinator (librdkafka #5511/#5456), and a 10 s reconnect backoff kept the gates
    away from a broker that was already back."""
    from worker.config import Settings
    from worker.kafka.clients import consumer_config, transactional_producer_config

    monkeypatch.delenv("SENDGATE_KAFKA__EXTRA", raising=False)
    settings = Settings()
    for config in (
        consumer_config(settings, group_id="g"),
        transactional_producer_config(settings, transactional_id="t"),
    ):
        assert config["metadata.recovery.strategy"] == "none"
        assert config["reconnect.backoff.max.ms"] <= 1000


def test_the_operator_may_still_turn_rebootstrapping_back_on(monkeypatch):
    from worker.config import Settings
    from worker.kafka.clients import consumer_config, transactional_producer_config

    monkeypatch.setenv(
        "SENDGATE_KAFKA__EXTRA", '{"metadata.recovery.strategy": "rebootstrap", "reconnect.backoff.max.ms": "10000"}'
    )
    settings = Settings()
    for config in (
        consumer_config(settings, group_id="g"),
        transactional_producer_config(settings, transactional_id="t"),
    ):
        assert config["metadata.recovery.strategy"] == "rebootstrap"
        assert config["reconnect.backoff.max.ms"] == "10000"


def test_librdkafka_accepts_the_recovery_settings():
    from confluent_kafka import Producer

    from worker.kafka.clients import BROKER_RESTART_RECOVERY

    # Constructing a client validates every property without any network I/O to a
    # reachable broker (127.0.0.1:9 refuses at once); an unknown name or value raises.
    Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0, **BROKER_RESTART_RECOVERY})


# --- when a transaction is committed ---------------------------------------------


def _gate(**update: object) -> GateSettings:
    return GateSettings().model_copy(update={"commit_every_messages": 100, "commit_interval_seconds": 10.0, **update})


def test_a_transaction_is_committed_on_count_or_interval_whether_or_not_the_loop_caught_up() -> None:
    now = time.monotonic()
    for caught_up in (False, True):
        assert commit_due(_gate(commit_when_caught_up=False), opened_at=now, records=100, caught_up=caught_up)
        assert commit_due(_gate(commit_when_caught_up=False), opened_at=now - 10.5, records=1, caught_up=caught_up)


def test_a_loop_with_records_waiting_keeps_its_transaction_open_below_count_and_interval() -> None:
    assert not commit_due(_gate(), opened_at=time.monotonic(), records=99, caught_up=False)


def test_a_caught_up_loop_commits_at_once_unless_told_to_wait_for_count_or_interval() -> None:
    now = time.monotonic()
    assert commit_due(_gate(), opened_at=now, records=1, caught_up=True)
    assert not commit_due(_gate(commit_when_caught_up=False), opened_at=now, records=1, caught_up=True)
