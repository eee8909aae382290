"""The state store refuses a Redis Cluster: the decision on INFO cluster and the operator's message.

A real three-master cluster is refused in tests/integration/test_redis_cluster.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from worker.errors import ConfigurationError, ExitCode
from worker.state.errors import StateUnavailable
from worker.state.topology import (
    RedisClusterRefused,
    cluster_enabled,
    cluster_refusal,
    redis_address,
    require_standalone,
)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"cluster_enabled": 1}, True),  # redis-py parses numbers
        ({"cluster_enabled": "1"}, True),
        ({"cluster_enabled": b"1"}, True),
        ({"cluster_enabled": 0}, False),
        ({"cluster_enabled": "0"}, False),
        ({}, False),  # a server that does not say is taken as standalone
    ],
)
def test_only_cluster_enabled_1_counts_as_cluster_mode(info, expected):
    assert cluster_enabled(info) is expected


def test_the_refusal_names_the_server_the_reason_and_the_setting_to_change():
    message = cluster_refusal("10.0.0.7:7001")
    assert message.startswith("Redis at 10.0.0.7:7001 runs in cluster mode (cluster_enabled:1): ")
    assert "needs a single primary" in message
    assert "SENDGATE_REDIS__URL" in message and "standalone Redis" in message and "Sentinel" in message


def test_the_address_never_carries_credentials():
    client = redis.Redis.from_url("redis://gate:pa55-Word@cache.internal:6380/2")  # no connection is made
    assert redis_address(client) == "cache.internal:6380"
    assert redis_address(redis.Redis(unix_socket_path="/run/redis.sock")) == "/run/redis.sock"


class FakeClient:
    """Just what require_standalone uses of a redis.Redis: INFO and the pool's address."""

    def __init__(self, reply: dict[str, Any] | Exception) -> None:
        self.reply = reply
        self.connection_pool = redis.ConnectionPool(host="127.0.0.1", port=7001)
        self.sections: list[str] = []

    def info(self, section: str) -> dict[str, Any]:
        self.sections.append(section)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def test_a_cluster_node_is_refused_as_a_configuration_error_exiting_14():
    client = FakeClient({"cluster_enabled": 1})
    with pytest.raises(RedisClusterRefused) as refused:
        require_standalone(client)  # type: ignore[arg-type]
    assert client.sections == ["cluster"]
    assert isinstance(refused.value, ConfigurationError) and refused.value.exit_code == ExitCode.CONFIG
    assert str(refused.value) == cluster_refusal("127.0.0.1:7001")


def test_a_standalone_redis_passes():
    require_standalone(FakeClient({"cluster_enabled": 0}))  # type: ignore[arg-type]


def test_a_redis_that_cannot_be_asked_is_unavailable_not_misconfigured():
    with pytest.raises(StateUnavailable, match="ConnectionError"):
        require_standalone(FakeClient(redis.ConnectionError("connection refused")))  # type: ignore[arg-type]
