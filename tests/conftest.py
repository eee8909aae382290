"""Fixtures shared by all tests; services are found only when a test asks for them.

Fixture names are an interface: ``services``, ``settings``, ``kafka_topics``
and ``redis_client``. ``pytest tests/unit`` never touches Kafka or Redis.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import harness
from tests.redis_cluster import RedisCluster, redis_cluster
from worker.config import Settings

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
MARKERS = {
    "integration": "needs real Kafka and Redis (started by the harness when not given)",
    "chaos": "fault injection (broker restarts, SIGKILL); runs only with SENDGATE_CHAOS=1 (make chaos)",
}


def chaos_enabled() -> bool:
    return os.environ.get("SENDGATE_CHAOS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, description in MARKERS.items():
        if name not in registered:
            config.addinivalue_line("markers", f"{name}: {description}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"sendgate chaos tests: {'enabled' if chaos_enabled() else 'deselected (SENDGATE_CHAOS=1 enables)'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
    if chaos_enabled():
        return
    # Slow fault tests are opted into with SENDGATE_CHAOS=1: deselected, not skipped.
    deselected = [item for item in items if item.get_closest_marker("chaos")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("chaos")]


@pytest.fixture(scope="session")
def services() -> Iterator[harness.Services]:
    """Kafka and Redis for the session: env vars, else the running local stack, else Docker, else `stack up`."""
    with contextlib.ExitStack() as stack:
        try:
            found = harness.discover(stack)
            harness.check_reachable(found)
        except harness.ServicesUnavailable as exc:
            pytest.fail(f"integration services unavailable: {exc}", pytrace=False)
        yield found


@pytest.fixture
def settings(services: harness.Services) -> Settings:
    """Settings with topics, consumer groups and Redis keys unique to this test."""
    return harness.settings_for(services, harness.unique_prefix())


@pytest.fixture
def kafka_topics(settings: Settings) -> Iterator[Settings]:
    """The six topics of ``settings`` created for this test and deleted after it."""
    from worker.kafka.admin import create_topics

    try:
        create_topics(settings)
        harness.wait_for_partition_leaders(settings)
        yield settings
    finally:
        harness.delete_topics(settings.kafka.bootstrap_servers, settings.topics.all_names())


@pytest.fixture
def redis_client(services: harness.Services, settings: Settings) -> Iterator[redis.Redis]:
    """A client of the session's Redis; the test's keys (``settings.state.key_prefix``) are removed after it."""
    client = redis.Redis.from_url(services.redis_url)
    try:
        yield client
    finally:
        harness.delete_redis_keys(client, settings.state.key_prefix)
        client.close()


@pytest.fixture(scope="session")
def redis_cluster_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real Redis Cluster (3 masters + 3 replicas) for the session, or ``SENDGATE_TEST_REDIS_CLUSTER``'s."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_settings(settings: Settings, redis_cluster_service: RedisCluster) -> Iterator[Settings]:
    """``settings`` pointed at the session's cluster; the test's keys are removed from it after."""
    redis_settings = settings.redis.model_copy(update={"url": redis_cluster_service.url, "cluster": True})
    yield settings.model_copy(update={"redis": redis_settings})
    client = redis_cluster_service.cluster_client()
    try:
        harness.delete_redis_keys(client, settings.state.key_prefix)  # type: ignore[arg-type]
    finally:
        client.close()
