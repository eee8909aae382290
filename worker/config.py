"""Settings: one frozen model read from ``SENDGATE_*`` variables (``__`` nests).

The defaults reach the local stack started by ``deploy/local/stack up``.
Each section produces the configuration its client library takes, so no
other module assembles librdkafka or redis-py options by hand.
"""

from __future__ import annotations

import socket
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(BaseModel):
    """Connection to the Kafka cluster; security options pass through to librdkafka."""

    model_config = _FROZEN

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "sendgate"
    # Extra librdkafka properties, e.g. {"socket.keepalive.enable": "true"}.
    extra: dict[str, str] = Field(default_factory=dict)

    def common_config(self) -> dict[str, Any]:
        """The librdkafka properties every client of ours shares."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        config.update(self.extra)
        return config


class RedisSettings(BaseModel):
    """Connection to the Redis state store; the URL may carry AUTH and ``rediss://`` TLS."""

    model_config = _FROZEN

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: str | None = None
    socket_timeout_seconds: float = 2.0
    connect_timeout_seconds: float = 2.0

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url(self.url, **kwargs)``."""
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_seconds,
            "socket_connect_timeout": self.connect_timeout_seconds,
        }
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        if self.ssl_ca_certs is not None:
            kwargs["ssl_ca_certs"] = self.ssl_ca_certs
        return kwargs


class SchemaRegistrySettings(BaseModel):
    """Optional Confluent Schema Registry; without a URL the fixed ids of SPEC §5 are used."""

    model_config = _FROZEN

    url: str | None = None
    basic_auth_user_info: SecretStr | None = None

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"url": self.url}
        if self.basic_auth_user_info is not None:
            config["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        return config


class TopicSettings(BaseModel):
    """Topic names of SPEC §5 and how ``sendgate topics create`` makes them."""

    model_config = _FROZEN

    requested: str = "sends.requested"
    allowed: str = "sends.allowed"
    suppressed: str = "sends.suppressed"
    dead_letter: str = "sends.dead-letter"
    preferences: str = "preferences.changed"
    rejected: str = "preferences.rejected"
    partitions: int = Field(default=6, ge=1)
    preference_partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def all_names(self) -> list[str]:
        return [self.requested, self.allowed, self.suppressed, self.dead_letter, self.preferences, self.rejected]


class StateSettings(BaseModel):
    """How suppression facts are kept in Redis."""

    model_config = _FROZEN

    # Keys and fields are keyed BLAKE2b digests: change the secret and the store is rebuilt.
    hash_secret: SecretStr = SecretStr("sendgate-local-development-secret")
    key_prefix: str = "sg"
    # Facts of one organization are spread over this many small Redis hashes so
    # each stays in Redis' compact listpack encoding. Fixed per store generation.
    buckets_per_org: int = Field(default=1024, ge=1, le=65536)
    default_phone_region: str = "US"


class GateSettings(BaseModel):
    """The gate worker: batching, transactions, fail-closed behaviour."""

    model_config = _FROZEN

    group_id: str = "sendgate-gate"
    instance_id: str = Field(default_factory=socket.gethostname)
    batch_max_messages: int = Field(default=500, ge=1)
    poll_timeout_seconds: float = Field(default=0.1, gt=0)
    commit_every_messages: int = Field(default=5000, ge=1)
    commit_interval_seconds: float = Field(default=0.2, gt=0)
    transaction_timeout_ms: int = Field(default=60000, ge=1000)
    barrier_timeout_seconds: float = Field(default=5.0, gt=0)
    backoff_initial_seconds: float = Field(default=0.1, gt=0)
    backoff_max_seconds: float = Field(default=5.0, gt=0)
    dead_letter_burst_max: int = Field(default=1000, ge=1)
    dead_letter_burst_window_seconds: float = Field(default=10.0, gt=0)
    policy_version: str = "2026-11-1"


class PreferenceSettings(BaseModel):
    """The preference applier."""

    model_config = _FROZEN

    group_id: str = "sendgate-preferences"
    batch_max_messages: int = Field(default=5000, ge=1)
    poll_timeout_seconds: float = Field(default=0.05, gt=0)


class HttpSettings(BaseModel):
    """The ``/metrics``, ``/healthz`` and ``/readyz`` endpoint."""

    model_config = _FROZEN

    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    enabled: bool = True


class LogSettings(BaseModel):
    model_config = _FROZEN

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class Settings(BaseSettings):
    """Every setting of sendgate; read once at start-up and never mutated."""

    model_config = SettingsConfigDict(
        env_prefix="SENDGATE_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    schema_registry: SchemaRegistrySettings = Field(default_factory=SchemaRegistrySettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    preferences: PreferenceSettings = Field(default_factory=PreferenceSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    log: LogSettings = Field(default_factory=LogSettings)
