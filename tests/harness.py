"""Where the integration tests find Kafka and Redis, and how they get per-test names.

Discovery, in order (SPEC §7, STYLE "services from env vars, else
testcontainers, else the local stack"):

1. ``SENDGATE_KAFKA__BOOTSTRAP_SERVERS`` and ``SENDGATE_REDIS__URL`` both set: use them.
2. The local stack (``deploy/local/stack``) already runs: use it (no
   containers started next to a stack that is there anyway).
3. A Docker daemon answers: Kafka and Redis testcontainers for the session.
4. Otherwise ``deploy/local/stack up`` (idempotent) and use it.

Services that do not answer afterwards fail the session: an integration test
never skips for want of a service (a skip in CI would hide a broken build).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from worker.config import (
    GateSettings,
    HttpSettings,
    KafkaSettings,
    PreferenceSettings,
    RedisSettings,
    Settings,
    StateSettings,
    TopicSettings,
)

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "local" / "stack"
# The first `stack up` on a machine resolves the Kafka jars with Maven.
STACK_UP_TIMEOUT_SECONDS = 600
KAFKA_TEST_IMAGE = os.environ.get("SENDGATE_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.9.0")
REDIS_TEST_IMAGE = os.environ.get("SENDGATE_TEST_REDIS_IMAGE", "redis:7")


class ServicesUnavailable(Exception):
    """Kafka or Redis could not be found or started; the message says what was tried."""


@dataclass(frozen=True)
class Services:
    """The Kafka and Redis a test session runs against."""

    bootstrap_servers: str
    redis_url: str
    # "env", "local-stack" or "testcontainers": tests may check stack-specific configuration.
    source: str


def local_stack_services() -> Services:
    """The addresses ``deploy/local/stack`` serves (it honours KAFKA_PORT and REDIS_PORT)."""
    kafka_port = os.environ.get("KAFKA_PORT", "9092")
    redis_port = os.environ.get("REDIS_PORT", "6379")
    return Services(f"127.0.0.1:{kafka_port}", f"redis://127.0.0.1:{redis_port}/0", "local-stack")


def run_stack(*args: str, timeout: float = STACK_UP_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
    """Run ``deploy/local/stack ARGS`` (e.g. ``"restart-kafka"`` in fault tests); output captured."""
    return subprocess.run(
        [str(STACK), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def docker_available() -> bool:
    """Whether a Docker daemon answers within a few seconds."""
    if shutil.which("docker") is None and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def start_containers(stack: contextlib.ExitStack) -> Services:
    """Kafka (KRaft) and Redis containers that live as long as ``stack``."""
    with warnings.catch_warnings():
        # docker and testcontainers warn about their own deprecations on import.
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.redis import RedisContainer

    kafka = (
        KafkaContainer(KAFKA_TEST_IMAGE)
        .with_kraft()
        # The same broker settings as deploy/local/stack: one replica everywhere,
        # no auto-created topics, long transactions allowed.
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_TRANSACTION_MAX_TIMEOUT_MS", "3600000")
        .with_env("KAFKA_MIN_INSYNC_REPLICAS", "1")
    )
    redis_container = RedisContainer(REDIS_TEST_IMAGE).with_command(
        "redis-server --save '' --appendonly no --maxmemory-policy noeviction"
    )
    stack.enter_context(kafka.start(timeout=120))
    stack.enter_context(redis_container.start())
    redis_host = redis_container.get_container_host_ip()
    redis_port = redis_container.get_exposed_port(6379)
    return Services(kafka.get_bootstrap_server(), f"redis://{redis_host}:{redis_port}/0", "testcontainers")


def start_local_stack() -> Services:
    """``deploy/local/stack up`` (a no-op when it runs) and its addresses."""
    try:
        result = run_stack("up")
    except subprocess.TimeoutExpired as exc:
        raise ServicesUnavailable(f"{STACK} up did not finish within {exc.timeout:g} s") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise ServicesUnavailable(
            f"{STACK} up exited {result.returncode}:\n" + "\n".join(output[-60:])
        )
    return local_stack_services()


def discover(stack: contextlib.ExitStack) -> Services:
    """Find or start Kafka and Redis; containers, if any, stop when ``stack`` closes."""
    bootstrap = os.environ.get("SENDGATE_KAFKA__BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("SENDGATE_REDIS__URL")
    if bootstrap and redis_url:
        return Services(bootstrap, redis_url, "env")
    if bootstrap or redis_url:
        raise ServicesUnavailable(
            "set both SENDGATE_KAFKA__BOOTSTRAP_SERVERS and SENDGATE_REDIS__URL, or neither "
            "(then the tests use Docker or deploy/local/stack)"
        )
    if run_stack("status", timeout=60).returncode == 0:
        return local_stack_services()
    if docker_available():
        return start_containers(stack)
    return start_local_stack()


def check_reachable(services: Services, *, timeout: float = 15.0) -> None:
    """Raise ServicesUnavailable unless Kafka lists a broker and Redis answers PING."""
    try:
        metadata = AdminClient({"bootstrap.servers": services.bootstrap_servers}).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ServicesUnavailable(
            f"Kafka at {services.bootstrap_servers} ({services.source}) did not answer: {exc.args[0]}"
        ) from exc
    if not metadata.brokers:
        raise ServicesUnavailable(f"Kafka at {services.bootstrap_servers} ({services.source}) lists no broker")
    client = redis.Redis.from_url(services.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServicesUnavailable(f"Redis at {services.redis_url} ({services.source}) did not answer: {exc}") from exc
    finally:
        client.close()


def unique_prefix() -> str:
    """A per-test name prefix: topics, consumer groups and Redis keys never collide."""
    return "t" + uuid.uuid4().hex[:10]


def settings_for(services: Services, prefix: str) -> Settings:
    """Settings for one test: its own topics, groups and Redis key prefix, no HTTP server."""
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=services.bootstrap_servers),
        redis=RedisSettings(url=services.redis_url),
        topics=TopicSettings(
            requested=f"{prefix}.sends.requested",
            allowed=f"{prefix}.sends.allowed",
            suppressed=f"{prefix}.sends.suppressed",
            dead_letter=f"{prefix}.sends.dead-letter",
            preferences=f"{prefix}.preferences.changed",
            rejected=f"{prefix}.preferences.rejected",
            partitions=3,
            preference_partitions=3,
        ),
        state=StateSettings(key_prefix=f"sg-{prefix}"),
        gate=GateSettings(group_id=f"{prefix}-gate", instance_id=prefix),
        preferences=PreferenceSettings(group_id=f"{prefix}-prefs"),
        http=HttpSettings(enabled=False),
    )


def delete_topics(bootstrap_servers: str, names: list[str], *, timeout: float = 30.0) -> None:
    """Delete topics, best effort: a leftover topic must not fail the test that made it."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout)
    for future in futures.values():
        with contextlib.suppress(KafkaException):
            future.result()


def delete_redis_keys(client: redis.Redis, prefix: str, *, batch: int = 1000) -> int:
    """UNLINK every key starting with ``prefix``; returns how many were removed."""
    removed = 0
    pending: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=batch):
        pending.append(key)
        if len(pending) >= batch:
            removed += client.unlink(*pending)
            pending.clear()
    if pending:
        removed += client.unlink(*pending)
    return removed


def wait_for_partition_leaders(settings: Settings, *, timeout: float = 30.0) -> None:
    """Right after creation a partition may have no leader yet, and an offsets request then
    fails with NOT_LEADER_FOR_PARTITION (retryable: workers pause and retry). Tests that
    read end offsets as a condition wait here once instead of each tolerating it."""
    from worker.kafka.admin import admin_client
    from worker.kafka.offsets import CommittedEndOffsets, OffsetsUnavailable

    admin = admin_client(settings)
    deadline = time.monotonic() + timeout
    for topic in settings.topics.all_names():
        offsets = CommittedEndOffsets(admin, topic)
        while True:
            try:
                offsets.read()
                break
            except OffsetsUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
