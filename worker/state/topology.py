"""What kind of Redis the state store talks to: it needs one primary, never a Redis Cluster.

The store's read script reads the global meta hash together with fact hashes
of many organizations, and its commit script writes facts and the applier's
progress in one atomic step. In a Redis Cluster those keys live in different
hash slots, so the scripts would fail at run time (CROSSSLOT, MOVED) — or,
worse, be split into non-atomic pieces by a proxy. The store refuses such a
Redis at start-up instead (fail closed), with a message naming the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from worker.state.errors import RedisClusterRefused, StateUnavailable


def cluster_enabled(info: Mapping[str, Any]) -> bool:
    """Whether an ``INFO cluster`` reply says cluster mode is on (``cluster_enabled:1``).

    A server that does not report the field (an old or stripped-down Redis) is
    taken as standalone: only a positive answer is refused.
    """
    value = info.get("cluster_enabled", 0)
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).strip() == "1"


def cluster_refusal(address: str) -> str:
    """The message an operator sees when ``address`` is a Redis Cluster node."""
    return (
        f"Redis at {address} runs in cluster mode (cluster_enabled:1): sendgate's state store needs a single "
        "primary (its scripts read and write the meta hash and the facts of many organizations atomically, "
        "which a cluster splits across hash slots); point SENDGATE_REDIS__URL at a standalone Redis "
        "or a Sentinel-managed primary"
    )


def redis_address(client: redis.Redis) -> str:
    """``host:port`` (or the socket path) ``client`` connects to; never credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def require_standalone(client: redis.Redis) -> None:
    """Raise :class:`RedisClusterRefused` when ``client``'s Redis runs in cluster mode.

    A Redis that cannot be asked raises :class:`StateUnavailable`, like every
    other store call (the caller retries or reports it as unreachable).
    """
    try:
        info = client.info("cluster")
    except redis.RedisError as exc:
        raise StateUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc
    if cluster_enabled(info):
        raise RedisClusterRefused(cluster_refusal(redis_address(client)))
