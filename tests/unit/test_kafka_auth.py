"""Refused Kafka credentials are a configuration error (exit 14), not an unreachable Kafka (15).

librdkafka reports a failed SASL handshake on the error callback only; the
request fails like an outage. A real SASL/PLAIN broker refusing a wrong
password is in tests/integration/test_security.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from worker import terminal as cli
from worker.config import KafkaSettings, Settings
from worker.errors import ExitCode, ServiceUnreachable
from worker.kafka import auth
from worker.kafka.admin import _metadata
from worker.kafka.auth import (
    AuthenticationWatch,
    KafkaCredentialsRefused,
    credentials_refused,
    credentials_refused_message,
    is_authentication_failure,
)
from worker.state.errors import StateUnavailable

BOOTSTRAP = "broker-1:9096,broker-2:9096"
AUTH_FAILED = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: Authentication failed: Invalid username or password")
TRANSPORT = KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Local: Broker transport failure")


@pytest.fixture(autouse=True)
def no_earlier_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_last_failure", None)


def test_the_message_names_the_brokers_and_the_settings_to_check():
    message = credentials_refused_message(BOOTSTRAP)
    assert message.startswith(f"Kafka at {BOOTSTRAP} refused the credentials (SASL authentication failed): ")
    for setting in ("SASL_USERNAME", "SASL_PASSWORD"):
        assert f"SENDGATE_KAFKA__{setting}" in message
        assert setting.lower() in KafkaSettings.model_fields  # a real setting name


def test_authentication_failures_are_told_apart_from_outages():
    assert is_authentication_failure(AUTH_FAILED)
    assert is_authentication_failure(KafkaException(AUTH_FAILED))
    assert is_authentication_failure(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED))
    assert not is_authentication_failure(TRANSPORT)
    assert not is_authentication_failure(KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)))
    assert not is_authentication_failure(ValueError("no Kafka error"))


def test_the_watch_remembers_when_credentials_were_refused():
    watch = AuthenticationWatch(BOOTSTRAP)
    before = time.monotonic()
    watch(TRANSPORT)
    assert not watch.refused_since(before)
    assert auth.last_refusal(within_seconds=60) is None
    watch(AUTH_FAILED)
    assert watch.refused_since(before)
    assert not watch.refused_since(time.monotonic() + 1)  # an old refusal does not explain a later failure
    assert auth.last_refusal(within_seconds=60) == BOOTSTRAP
    refused = credentials_refused(watch.bootstrap)  # what _metadata raises on such a refusal
    assert isinstance(refused, KafkaCredentialsRefused)
    assert refused.exit_code == ExitCode.CONFIG


class FakeAdmin:
    """list_topics fails like librdkafka's; poll serves the queued error callbacks."""

    def __init__(self, watch: AuthenticationWatch, queued: list[KafkaError]) -> None:
        self.auth_watch = watch
        self.queued = queued
        self.attempts = 0

    def list_topics(self, timeout: float) -> Any:
        self.attempts += 1
        time.sleep(min(timeout, 0.05))
        raise KafkaException(TRANSPORT)

    def poll(self, timeout: float) -> int:
        served, self.queued = self.queued, []
        for error in served:
            self.auth_watch(error)
        return len(served)


def settings() -> Settings:
    return Settings(kafka=KafkaSettings(bootstrap_servers=BOOTSTRAP))


def test_metadata_reports_refused_credentials_at_once():
    admin = FakeAdmin(AuthenticationWatch(BOOTSTRAP), [AUTH_FAILED])
    started = time.monotonic()
    with pytest.raises(KafkaCredentialsRefused, match="refused the credentials"):
        _metadata(admin, settings(), 10.0)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5 and admin.attempts == 1


def test_metadata_without_a_refusal_is_still_an_unreachable_kafka():
    admin = FakeAdmin(AuthenticationWatch(BOOTSTRAP), [TRANSPORT])
    with pytest.raises(ServiceUnreachable, match=r"did not answer within 0\.3 s"):
        _metadata(admin, settings(), 0.3)  # type: ignore[arg-type]


def exit_code_of(action: Any, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        cli.run_guarded(action)
    return exited.value.code, " ".join(capsys.readouterr().err.split())  # type: ignore[return-value]


def raise_(exc: BaseException) -> Any:
    def action() -> None:
        raise exc

    return action


def test_the_cli_exits_14_for_an_authentication_error_and_15_for_an_outage(capsys):
    code, said = exit_code_of(raise_(KafkaException(AUTH_FAILED)), capsys)
    assert code == ExitCode.CONFIG and "refused the credentials (SASL authentication failed)" in said
    code, said = exit_code_of(raise_(KafkaException(TRANSPORT)), capsys)
    assert code == ExitCode.UNREACHABLE and "unreachable" in said


def test_an_outage_right_after_a_refusal_is_reported_as_the_refusal(capsys):
    AuthenticationWatch(BOOTSTRAP)(AUTH_FAILED)
    for failure in (
        ServiceUnreachable(f"Kafka at {BOOTSTRAP} did not answer within 10 s"),
        StateUnavailable("offsets unavailable"),
        KafkaException(TRANSPORT),
    ):
        code, said = exit_code_of(raise_(failure), capsys)
        assert code == ExitCode.CONFIG, failure
        assert f"Kafka at {BOOTSTRAP} refused the credentials" in said
