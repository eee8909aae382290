"""Settings: environment parsing, client configurations, secrets, and the README reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.config import Settings
from worker.ops.config_reference import END_MARKER, START_MARKER, embed, reference_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_reach_the_local_stack(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("SENDGATE_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.schema_registry.url is None
    assert settings.topics.all_names() == [
        "sends.requested", "sends.allowed", "sends.suppressed", "sends.dead-letter", "preferences.changed", "preferences.rejected",
    ]


def test_nested_variables_and_security_options_reach_the_clients(monkeypatch):
    monkeypatch.setenv("SENDGATE_KAFKA__BOOTSTRAP_SERVERS", "broker:9093")
    monkeypatch.setenv("SENDGATE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SENDGATE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SENDGATE_KAFKA__SASL_USERNAME", "gate")
    monkeypatch.setenv("SENDGATE_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("SENDGATE_KAFKA__EXTRA", '{"socket.keepalive.enable": "true"}')
    monkeypatch.setenv("SENDGATE_REDIS__URL", "rediss://cache:6380/2")
    monkeypatch.setenv("SENDGATE_REDIS__PASSWORD", "r3dis")
    monkeypatch.setenv("SENDGATE_GATE__BATCH_MAX_MESSAGES", "250")
    settings = Settings()
    kafka = settings.kafka.common_config()
    assert kafka["bootstrap.servers"] == "broker:9093"
    assert kafka["security.protocol"] == "SASL_SSL"
    assert kafka["sasl.mechanism"] == "SCRAM-SHA-512"
    assert kafka["sasl.username"] == "gate" and kafka["sasl.password"] == "s3cret"
    assert kafka["socket.keepalive.enable"] == "true"
    assert settings.redis.client_kwargs()["password"] == "r3dis"
    assert settings.gate.batch_max_messages == 250
    assert "s3cret" not in repr(settings) and "r3dis" not in repr(settings)


def test_settings_are_frozen_and_reject_unknown_or_invalid_values(monkeypatch):
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.gate.batch_max_messages = 3  # type: ignore[misc]
    monkeypatch.setenv("SENDGATE_GATE__BATCH_MAX_MESSAGES", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("SENDGATE_GATE__BATCH_MAX_MESSAGES", "10")
    monkeypatch.setenv("SENDGATE_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(ValidationError):
        Settings()


def test_every_setting_is_described():
    table = reference_table()
    for line in table.splitlines()[2:]:
        assert not line.endswith("|  |"), f"undocumented setting: {line}"


def test_the_readme_configuration_reference_matches_the_settings_model():
    readme = README.read_text()
    assert START_MARKER in readme and END_MARKER in readme
    assert embed(readme) == readme, "run: python -m worker.ops.config_reference and paste it into README.md (or use embed())"


def test_extra_librdkafka_properties_override_our_client_defaults(monkeypatch):
    from worker.kafka.clients import consumer_config, transactional_producer_config

    monkeypatch.setenv("SENDGATE_KAFKA__EXTRA", '{"session.timeout.ms": "6000", "linger.ms": "20"}')
    settings = Settings()
    assert consumer_config(settings, group_id="g")["session.timeout.ms"] == "6000"
    assert transactional_producer_config(settings, transactional_id="t")["linger.ms"] == "20"
