"""The services the integration tests run against answer, configured as sendgate needs."""

from __future__ import annotations

import redis
from confluent_kafka.admin import AdminClient

from tests import harness


def test_kafka_lists_its_brokers(services: harness.Services) -> None:
    metadata = AdminClient({"bootstrap.servers": services.bootstrap_servers}).list_topics(timeout=15)
    assert metadata.brokers, f"no broker listed by {services.bootstrap_servers}"


def test_redis_answers_ping_and_never_evicts(services: harness.Services) -> None:
    client = redis.Redis.from_url(services.redis_url, socket_timeout=5)
    try:
        assert client.ping()
        if services.source != "env":
            # Evicting a suppression fact would silently allow a send (SPEC §6.2).
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    finally:
        client.close()


def test_settings_are_unique_per_test_and_keys_are_cleaned(settings, redis_client) -> None:
    other = harness.settings_for(
        harness.Services(settings.kafka.bootstrap_servers, settings.redis.url, "env"), harness.unique_prefix()
    )
    assert set(settings.topics.all_names()).isdisjoint(other.topics.all_names())
    assert settings.gate.group_id != other.gate.group_id
    assert settings.state.key_prefix.startswith("sg-t")
    redis_client.set(f"{settings.state.key_prefix}:probe", b"1")
    assert harness.delete_redis_keys(redis_client, settings.state.key_prefix) == 1
    assert redis_client.exists(f"{settings.state.key_prefix}:probe") == 0
