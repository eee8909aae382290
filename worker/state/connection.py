"""The Redis client of the state store: one primary, or a Redis Cluster.

``SENDGATE_REDIS__CLUSTER=true`` selects redis-py's ``RedisCluster`` (the URL
names any node; the client learns the slot map from it). Every script of the
store touches the keys of one shard, whose hash tag puts them in one slot, so
the cluster client routes each call to the node owning it; a pipeline is
grouped by node, so a batch costs one round trip per node.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError
from redis.retry import Retry

from worker.config import RedisSettings

logger = logging.getLogger(__name__)

StateClient = redis.Redis | RedisCluster
T = TypeVar("T")

# A cluster in motion (failover, resharding) answers with these; the gate retries its batch.
CLUSTER_RETRIES = 2
_CLUSTER_TRANSIENT = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


def connect(settings: RedisSettings) -> StateClient:
    """A client for ``settings``; no network I/O happens here."""
    if settings.cluster:
        # The client's own retries are kept short: the store turns a failure into
        # StateUnavailable and the caller's backoff (fail closed meanwhile) takes over.
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), CLUSTER_RETRIES)
        return RedisCluster.from_url(settings.url, **settings.client_kwargs(), retry=retry)
    return redis.Redis.from_url(settings.url, **settings.client_kwargs())


def per_primary_info(client: StateClient, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of the one server, or of every master of a cluster."""
    if not isinstance(client, RedisCluster):
        return [client.info(section)]
    replies = client.info(section, target_nodes=RedisCluster.PRIMARIES)
    # Several nodes answer as {"host:port": info}; redis-py unwraps a single answer.
    if replies and all(":" in str(name) for name in replies):
        return list(replies.values())
    return [replies]


def used_memory(client: StateClient) -> int:
    return sum(int(info["used_memory"]) for info in per_primary_info(client, "memory"))


def is_cluster(client: StateClient) -> bool:
    return isinstance(client, RedisCluster)


def is_cluster_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a redirection or a cluster not yet agreeing on its slots (retry the batch)."""
    return isinstance(exc, redis.ResponseError) and str(exc).split(" ", 1)[0].upper() in _CLUSTER_TRANSIENT


class Script:
    """A Lua script called by SHA; a node that does not know it gets it loaded and the call retried."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    def load(self, client: StateClient) -> None:
        """Load the script; a cluster client loads it on every primary."""
        client.script_load(self.source)


def run_pipelined(client: StateClient, calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Run ``calls`` (script, keys, args) in one pipeline; answers (or the exception of each) in order.

    Calls answered NOSCRIPT never ran: the scripts are loaded and only those
    are sent again, so a commit that did run is never repeated.
    """
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for at in pending:
            script, keys, args = calls[at]
            script.queue(pipe, keys, args)
        answers = pipe.execute(raise_on_error=False)
        missing: list[int] = []
        for at, answer in zip(pending, answers, strict=True):
            replies[at] = answer
            if isinstance(answer, NoScriptError) and attempt == 0:
                missing.append(at)
        if not missing:
            break
        for script in {id(calls[at][0]): calls[at][0] for at in missing}.values():
            script.load(client)
        pending = missing
    return replies


def on_raw_socket(client: redis.Redis, exchange: Callable[[int, float | None], T]) -> T | None:
    """``exchange(fd, timeout)`` on the socket of one of ``client``'s connections, or None over TLS.

    For the compiled core, which writes a request and reads its answer on the
    socket itself, without the GIL (``PreparedBatch.read_state``). The
    connection is checked out as redis-py checks one out for a command (no
    unread reply left on it); if ``exchange`` raises, part of a reply may
    still be on the socket, so it is closed rather than handed to the next caller.
    """
    pool = client.connection_pool
    if issubclass(pool.connection_class, redis.SSLConnection):
        return None  # the bytes on a TLS socket are not the protocol's
    connection: Any = pool.get_connection()  # redis-py leaves its connections untyped
    try:
        sock = connection._sock
        return exchange(sock.fileno(), sock.gettimeout())
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
