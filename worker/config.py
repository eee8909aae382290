"""Settings: one frozen model read from ``SENDGATE_*`` variables (``__`` nests).

The defaults reach the local stack started by ``deploy/local/stack up``.
Each section produces the configuration its client library takes, so no
other module assembles librdkafka or redis-py options by hand. Attribute
docstrings are the field descriptions: the README's configuration reference
is generated from them (``python -m worker.ops.config_reference``).
"""

from __future__ import annotations

import socket
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class KafkaSettings(BaseModel):
    """Connection to the Kafka cluster; security options pass through to librdkafka."""

    model_config = _FROZEN

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of brokers."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """librdkafka security.protocol."""
    sasl_mechanism: str | None = None
    """SASL mechanism, e.g. PLAIN, SCRAM-SHA-512."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password (secret)."""
    ssl_ca_location: str | None = None
    """CA bundle verifying the brokers' certificates."""
    ssl_certificate_location: str | None = None
    """Client certificate for mutual TLS."""
    ssl_key_location: str | None = None
    """Client private key for mutual TLS."""
    ssl_key_password: SecretStr | None = None
    """Password of the client private key (secret)."""
    client_id: str = "sendgate"
    """client.id reported to the brokers."""
    extra: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka properties as JSON, e.g. {"socket.keepalive.enable": "true"}."""
    recoveries_max: int = Field(default=20, ge=0)
    """Most in-process rebuilds of a worker's dead Kafka clients (a fatal transactional producer, a consumer fenced by its own rejoin) within the window; one more exits 11."""
    recovery_window_seconds: float = Field(default=60.0, gt=0)
    """Window of the Kafka client rebuild bound."""

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
    """Connection to the Redis state store."""

    model_config = _FROZEN

    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL; rediss:// for TLS, credentials may be given in the URL or below."""
    username: str | None = None
    """ACL user name (Redis 6+)."""
    password: SecretStr | None = None
    """AUTH password (secret)."""
    ssl_ca_certs: str | None = None
    """CA bundle for rediss:// connections."""
    socket_timeout_seconds: float = 2.0
    """Per-command timeout; a slower Redis counts as unavailable and the gate fails closed."""
    connect_timeout_seconds: float = 2.0
    """Connection timeout."""
    cluster: bool = False
    """Talk to a Redis Cluster (redis-py's RedisCluster; ``url`` names any node) instead of one primary."""

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
    """Schema Registry URL; unset: fixed schema ids 1-4."""
    basic_auth_user_info: SecretStr | None = None
    """user:password for the registry (secret)."""

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"url": self.url}
        if self.basic_auth_user_info is not None:
            config["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        return config


class TopicSettings(BaseModel):
    """Topic names of SPEC §5 and how ``sendgate topics create`` makes them."""

    model_config = _FROZEN

    requested: str = "sends.requested"
    """Input: send requests from the campaign engines."""
    allowed: str = "sends.allowed"
    """Output: allowed requests, input bytes unchanged."""
    suppressed: str = "sends.suppressed"
    """Output: SuppressedSend records with reasons."""
    dead_letter: str = "sends.dead-letter"
    """Output: undecodable input with error headers."""
    preferences: str = "preferences.changed"
    """Input of the applier: preference events (the source of truth, infinite retention)."""
    rejected: str = "preferences.rejected"
    """Output of the applier: rejected preference events."""
    partitions: int = Field(default=6, ge=1)
    """Partitions of the sends.* topics created by `sendgate topics create`."""
    preference_partitions: int = Field(default=6, ge=1)
    """Partitions of preferences.changed and preferences.rejected."""
    replication_factor: int = Field(default=1, ge=1)
    """Replication factor of created topics (3 in production)."""

    def all_names(self) -> list[str]:
        return [self.requested, self.allowed, self.suppressed, self.dead_letter, self.preferences, self.rejected]


class StateSettings(BaseModel):
    """How suppression facts are kept in Redis."""

    model_config = _FROZEN

    hash_secret: SecretStr = SecretStr("sendgate-local-development-secret")
    """Key of the BLAKE2b digests naming facts in Redis (secret; change it and the store is rebuilt)."""
    key_prefix: str = "sg"
    """Prefix of every Redis key of the store."""
    buckets_per_org: int = Field(default=1024, ge=1, le=65536)
    """Small Redis hashes per organization holding its facts (compact listpack encoding); fixed per store generation."""
    shards: int = Field(default=16, ge=1, le=16384)
    """Shards of the store: bucket ``b`` of every organization lives in shard ``b % shards``, each shard one Redis
    Cluster hash slot with its own meta and progress; recorded in the store (a mismatch is refused). Keep
    ``buckets_per_org`` a multiple of it so every shard is used."""
    default_phone_region: str = "US"
    """Region assumed for phone numbers written without a country code."""


class GateSettings(BaseModel):
    """The gate worker: batching, transactions, fail-closed behaviour."""

    model_config = _FROZEN

    group_id: str = "sendgate-gate"
    """Consumer group of the gates."""
    instance_id: str = Field(default_factory=socket.gethostname)
    """Unique per gate process (default: host name, the pod name on Kubernetes): static group member id and transactional id suffix."""
    batch_max_messages: int = Field(default=2000, ge=1)
    """Most records taken by one consume() call (one state round trip each); below capacity a batch is what has arrived."""
    poll_timeout_seconds: float = Field(default=0.05, gt=0)
    """Longest wait of consume() for a full batch; records waiting count towards end-to-end latency."""
    commit_every_messages: int = Field(default=5000, ge=1)
    """Commit the transaction after this many input records..."""
    commit_interval_seconds: float = Field(default=0.2, gt=0)
    """...or after this many seconds, whichever comes first."""
    commit_when_caught_up: bool = True
    """Also commit as soon as every record taken is decided and none is waiting (group commit): below capacity a record then waits for one commit, not for the interval; at capacity records always wait and the count/interval rule governs. Off: commit only on count or interval (fewer, larger transactions)."""
    transaction_timeout_ms: int = Field(default=60000, ge=1000)
    """Kafka transaction.timeout.ms."""
    barrier_timeout_seconds: float = Field(default=5.0, gt=0)
    """Longest wait for the applier to reach the freshness barrier before failing closed."""
    backoff_initial_seconds: float = Field(default=0.1, gt=0)
    """First pause after a fail-closed abort; doubles up to the maximum."""
    backoff_max_seconds: float = Field(default=5.0, gt=0)
    """Longest pause between fail-closed retries."""
    dead_letter_burst_max: int | None = Field(default=None, ge=1)
    """Opt-in: stop (exit 12) when more dead letters than this arrive within the window; unset: never stop, every poison value is dead-lettered (SPEC 6.5)."""
    dead_letter_burst_window_seconds: float = Field(default=10.0, gt=0)
    """Window of the opt-in dead-letter burst check."""
    policy_version: str = "2026-11-1"
    """Written into every decision (header and SuppressedSend.policy_version)."""


class PreferenceSettings(BaseModel):
    """The preference applier."""

    model_config = _FROZEN

    group_id: str = "sendgate-preferences"
    """Consumer group of the appliers (progress itself is kept in Redis)."""
    instance_id: str | None = None
    """Static group member id of this applier; unset: host name, process id and a count (unique per applier; stable in a container, where the worker is pid 1). Give each replica a stable name to keep its partitions across restarts."""
    batch_max_messages: int = Field(default=5000, ge=1)
    """Most events applied in one atomic Redis commit."""
    poll_timeout_seconds: float = Field(default=0.05, gt=0)
    """How long consume() waits for events."""
    committed_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long to wait for the group's committed offsets, which mark the rejections already published."""


class HttpSettings(BaseModel):
    """The ``/metrics``, ``/healthz`` and ``/readyz`` endpoint."""

    model_config = _FROZEN

    host: str = "127.0.0.1"
    """Bind address (0.0.0.0 in containers)."""
    port: int = Field(default=9464, ge=0, le=65535)
    """Port; 0 picks a free one."""
    enabled: bool = True
    """Serve the endpoint at all."""


class LogSettings(BaseModel):
    """Structured logs on stderr."""

    model_config = _FROZEN

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    format: Literal["json", "console"] = "json"
    """json (one object per line) or console (readable)."""


class Settings(BaseSettings):
    """Every setting of sendgate; read once at start-up and never mutated."""

    model_config = SettingsConfigDict(
        env_prefix="SENDGATE_", env_nested_delimiter="__", frozen=True, extra="forbid", use_attribute_docstrings=True
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
