"""The Redis state store: facts in small hashes, and per shard a meta hash with its status and progress.

Every script touches the keys of one shard (one hash tag, one Redis Cluster
slot). A batch read or commit sends one script call per shard in one
pipeline: one round trip with a single primary, one per node with a cluster.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.exceptions import RedisClusterException

from worker._native import read_facts
from worker.config import RedisSettings, StateSettings
from worker.errors import ConfigurationError
from worker.policy.facts import FactKey
from worker.state import scripts
from worker.state.addressing import FIELD_BYTES, LAYOUT_VERSION, FactAddressing
from worker.state.connection import (
    Script,
    StateClient,
    connect,
    is_cluster,
    is_cluster_transient,
    on_raw_socket,
    per_primary_info,
    run_pipelined,
)
from worker.state.errors import GenerationLost, IncompatibleLayout, OlderLayout, ProgressConflict, StateUnavailable
from worker.state.store import PackedSnapshot, PackedWrites, ShardCommit, Snapshot, StoreStatus

if TYPE_CHECKING:
    from worker._native import PreparedBatch

logger = logging.getLogger(__name__)

SAFE_EVICTION_POLICY = "noeviction"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStateStore:
    """:class:`~worker.state.store.StateStore` on one Redis primary or a Redis Cluster.

    Commits are atomic per shard: a script that also checks the shard's
    generation and the expected progress.
    """

    def __init__(
        self, *, addressing: FactAddressing, client: StateClient | None = None, connector: Callable[[], StateClient] | None = None
    ) -> None:
        if (client is None) == (connector is None):
            raise ValueError("give a client or a connector")
        self._connected = client
        self._connector = connector
        self._addressing = addressing
        self._read = Script(scripts.READ)
        self._commit = Script(scripts.COMMIT)
        self._begin = Script(scripts.BEGIN_GENERATION)
        # The last meta hash read of each shard and its status, and the last combined status:
        # batch after batch the meta is the same, and parsing 16 of them cost ~0.3 ms of GIL a batch.
        self._parsed_meta: dict[int, tuple[list[Any], StoreStatus]] = {}
        self._last_combined: StoreStatus | None = None

    @classmethod
    def from_settings(cls, redis_settings: RedisSettings, state_settings: StateSettings) -> RedisStateStore:
        # A cluster client asks a node for the slot map when made: made on first use, so an
        # unreachable cluster at start is a retryable StateUnavailable like any outage.
        return cls(connector=lambda: connect(redis_settings), addressing=FactAddressing(state_settings))

    @property
    def client(self) -> StateClient:
        """The Redis client, made on first use; :class:`StateUnavailable` when a cluster cannot be reached."""
        if self._connected is None:
            assert self._connector is not None
            connector = self._connector
            self._connected = self._call(connector)
        return self._connected

    @property
    def _client(self) -> StateClient:
        return self.client

    @property
    def shard_count(self) -> int:
        return self._addressing.shards

    def shard_of(self, key: str) -> int:
        return self._addressing.shard_of(key)

    def close(self) -> None:
        if self._connected is not None:
            self._connected.close()

    def check(self) -> None:
        for info in self._call(lambda: per_primary_info(self._client, "memory")):
            policy = info.get("maxmemory_policy")
            if policy != SAFE_EVICTION_POLICY:
                raise ConfigurationError(
                    f"Redis maxmemory-policy is {policy!r}: sendgate needs {SAFE_EVICTION_POLICY!r}, "
                    "because an evicted opt-out would let a suppressed message through"
                )

    def status(self) -> StoreStatus:
        metas = self._addressing.meta_keys

        def read_all() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for key in metas:
                pipe.hgetall(key)
            return list(pipe.execute())

        flats = self._call(read_all)
        shards = {n: self._status({_text(k): _text(v) for k, v in flat.items()}) for n, flat in enumerate(flats)}
        combined = StoreStatus.combine(shards)
        if all(part.generation is None for part in shards.values()):
            self._refuse_unsharded_layout()
        return combined

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        facts: dict[FactKey, str | None] = dict.fromkeys(keys)
        groups = self._addressing.group(facts)
        packed = self.read_packed(list(groups), [b"".join(fields) for _, fields in groups.values()], len(facts))
        # Positions count the facts hash by hash, in the order of ``groups``;
        # every fact not named in the reply is absent, as ``facts`` already says.
        in_reply_order = list(itertools.chain.from_iterable(wanted for wanted, _ in groups.values()))
        found = packed.found
        for at in range(0, len(found), 2):
            facts[in_reply_order[found[at] - 1]] = _text(found[at + 1])
        return Snapshot(facts=facts, status=packed.status)

    def read_packed(self, keys: list[str], fields: list[bytes], fact_count: int) -> PackedSnapshot:
        """:meth:`read` for facts laid out by the compiled core (the applier's batches).

        On a standalone Redis the core reads them itself (``read_facts``, see
        :meth:`read_prepared`); a cluster and TLS take the read script.
        """
        if fact_count and not is_cluster(self._client):
            shards = [self._addressing.shard_of(key) for key in keys]
            metas = self._addressing.meta_keys
            snapshot = self._read_on_socket(lambda fd, timeout: read_facts(fd, keys, fields, shards, metas, timeout))
            if snapshot is not None:
                return snapshot
        return self.read_scripted(keys, fields, fact_count)

    def read_scripted(self, keys: list[str], fields: list[bytes], fact_count: int) -> PackedSnapshot:
        """:meth:`read_packed` through the read script: one call per shard, pipelined (a cluster's way, and the reference)."""
        order, calls = self.read_calls(keys, fields)
        if not calls:  # nothing to read: the status alone says whether the store may be trusted
            return PackedSnapshot(found=[], status=self.status())
        return self._combine_reads(order, self._pipelined(calls), fact_count)

    def read_calls(self, keys: list[str], fields: list[bytes]) -> tuple[list[int], list[tuple[Script, list[Any], list[Any]]]]:
        """The shards read (ascending) and the read script's call for each, for ``keys`` and their wanted ``fields``."""
        per_shard: dict[int, tuple[list[str], list[Any]]] = {}
        base = 0
        for key, packed in zip(keys, fields, strict=True):
            shard_keys, args = per_shard.setdefault(self._addressing.shard_of(key), ([], []))
            shard_keys.append(key)
            count = len(packed) // FIELD_BYTES
            args += [base, count, *(packed[at : at + FIELD_BYTES] for at in range(0, len(packed), FIELD_BYTES))]
            base += count
        order = sorted(per_shard)
        return order, [(self._read, [self._addressing.meta_keys[n], *per_shard[n][0]], per_shard[n][1]) for n in order]

    def read_prepared(self, batch: PreparedBatch) -> PackedSnapshot:
        """:meth:`read_packed` for a batch of the compiled core, which reads a standalone Redis itself.

        The core sends one ``MULTI``/``EXEC`` of ``HGETALL`` (each shard's meta)
        and ``HMGET`` (each fact hash) on a connection of the pool and parses
        the answer without the GIL: the same snapshot as the read script's
        (held equal by the tests), at a third of its Redis time and without
        the read thread taking the GIL back after every ``recv``. A cluster
        routes each call by its key, and a TLS socket carries no plain
        protocol: both take the read script (:meth:`read_scripted`).
        """
        if batch.fact_count and not is_cluster(self._client):
            metas = self._addressing.meta_keys
            snapshot = self._read_on_socket(lambda fd, timeout: batch.read_state(fd, metas, timeout))
            if snapshot is not None:
                return snapshot
        return self.read_scripted(batch.keys, batch.fields, batch.fact_count)  # no facts: the list is empty

    def _read_on_socket(self, read: Callable[[int, float | None], tuple[list[int], list[list[bytes]], list[Any]]]) -> PackedSnapshot | None:
        """The core's own read on a connection of the pool, as a snapshot; None over TLS."""
        try:
            answer = on_raw_socket(cast(redis.Redis, self._client), read)
        except (OSError, ValueError) as exc:  # ConnectionError and TimeoutError are OSErrors
            raise StateUnavailable(f"Redis: state read failed ({type(exc).__name__}): {exc}") from exc
        except redis.RedisError as exc:  # checking a connection out connects it
            raise StateUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc
        if answer is None:
            return None
        order, shard_metas, found = answer
        shards = {shard: self._shard_status(shard, meta) for shard, meta in zip(order, shard_metas, strict=True)}
        return PackedSnapshot(found=found, status=self._combined(shards))

    def _combine_reads(self, order: Sequence[int], replies: Sequence[Any], fact_count: int) -> PackedSnapshot:
        """The read script's replies of the shards in ``order``, as one snapshot (refused unless complete)."""
        found: list[Any] = []
        read = 0
        shards: dict[int, StoreStatus] = {}
        for shard, reply in zip(order, replies, strict=True):
            if isinstance(reply, Exception):
                raise self._failure(reply, shard)
            if len(reply) % 2:
                raise StateUnavailable(f"Redis: shard {shard}'s read answered an odd reply")
            shards[shard] = self._shard_status(shard, reply[0])
            read += reply[1]
            found += reply[2:]
        if read != fact_count:  # never decide on a partial answer
            raise StateUnavailable(f"Redis: read script answered for {read} of {fact_count} facts")
        return PackedSnapshot(found=found, status=self._combined(shards))

    def begin_generation(self, targets: Mapping[int, int]) -> StoreStatus:
        args: list[Any] = [
            uuid.uuid4().hex, self._addressing.buckets, self._addressing.secret_fingerprint, LAYOUT_VERSION, self.shard_count,
        ]
        for partition, target in sorted(targets.items()):
            args += [partition, target]
        calls = [(self._begin, [meta], args) for meta in self._addressing.meta_keys]
        replies = self._pipelined(calls)
        shards: dict[int, StoreStatus] = {}
        for shard, reply in enumerate(replies):
            if isinstance(reply, Exception):
                raise self._failure(reply, shard)
            shards[shard] = self._status(self._pairs(reply))
        status = StoreStatus.combine(shards)
        logger.info(
            "state generation in force",
            extra={"generation": status.generation, "ready": status.ready, "targets": dict(status.targets)},
        )
        return status

    def commit(
        self,
        *,
        generation: str,
        expected: Mapping[int, int],
        progress: Mapping[int, int],
        writes: Mapping[FactKey, str],
    ) -> StoreStatus:
        facts = list(writes)
        cells = {where: writes[fact] for fact, where in zip(facts, self._addressing.locate_all(facts), strict=True)}
        every = ShardCommit(generation=generation, expected=expected, progress=progress)
        return self.commit_shards(shards=dict.fromkeys(range(self.shard_count), every), writes=PackedWrites.of(cells))

    def commit_shards(self, *, shards: Mapping[int, ShardCommit], writes: PackedWrites) -> StoreStatus:
        split = writes.by_shard(self._addressing.shard_of)
        strays = sorted(set(split) - set(shards))
        if strays:
            raise ValueError(f"writes for shards {strays}, which this commit does not name")
        order = sorted(shards)
        calls = []
        for shard in order:
            part = shards[shard]
            shard_writes = split.get(shard, PackedWrites([], []))
            args: list[Any] = [part.generation, len(part.progress)]
            for partition, offset in part.progress.items():
                args += [partition, part.expected.get(partition, -1), offset]
            args += [FIELD_BYTES, *shard_writes.writes]
            calls.append((self._commit, [self._addressing.meta_keys[shard], *shard_writes.keys], args))
        replies = self._pipelined(calls)
        statuses: dict[int, StoreStatus] = {}
        failure: Exception | None = None
        for shard, reply in zip(order, replies, strict=True):
            if isinstance(reply, Exception):
                failure = failure or self._failure(reply, shard)
                continue
            statuses[shard] = self._status(self._pairs(reply))
        if failure is not None:
            raise failure
        return StoreStatus.combine(statuses)

    def clear(self) -> int:
        # A cluster client scans every primary and splits the UNLINK by slot.
        keys: list[Any] = self._call(lambda: list(self._client.scan_iter(match=self._addressing.key_pattern(), count=1000)))
        deleted = 0
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            deleted += self._call(lambda chunk=chunk: self._client.unlink(*chunk))
        return deleted

    def _pipelined(self, calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]]) -> list[Any]:
        return self._checked(self._call(lambda: run_pipelined(self._client, calls)))

    @staticmethod
    def _checked(replies: list[Any]) -> list[Any]:
        for reply in replies:  # a node down or a cluster in motion: the whole batch is retried
            if isinstance(reply, redis.RedisError) and not isinstance(reply, redis.ResponseError):
                raise StateUnavailable(f"Redis: {type(reply).__name__}: {reply}") from reply
            if is_cluster_transient(reply):
                raise StateUnavailable(f"Redis Cluster in motion: {reply}") from reply
        return replies

    @staticmethod
    def _failure(reply: Exception, shard: int) -> Exception:
        """The error a script's error reply stands for."""
        message = str(reply)
        if message.startswith("GENERATION"):
            return GenerationLost(f"shard {shard}'s generation changed under the applier ({message})", shard=shard)
        if message.startswith("CONFLICT"):
            return ProgressConflict(f"shard {shard}: {message}", shard=shard)
        error = StateUnavailable(f"Redis: shard {shard}: {type(reply).__name__}: {reply}")
        error.__cause__ = reply
        return error

    def _refuse_unsharded_layout(self) -> None:
        """A store of layout 3 or older kept one meta hash: report it, so the applier empties and rebuilds it."""
        legacy = self._call(lambda: self._client.hgetall(self._addressing.legacy_meta_key))
        if legacy:
            self._check_compatible({_text(k): _text(v) for k, v in legacy.items()})

    def _shard_status(self, shard: int, meta: list[Any]) -> StoreStatus:
        """:meth:`_status` of a shard's meta hash as read (a flat name/value list), parsed again only when it changed."""
        cached = self._parsed_meta.get(shard)
        if cached is not None and cached[0] == meta:
            return cached[1]
        status = self._status(self._pairs(meta))  # raises on an incompatible store: nothing is cached then
        self._parsed_meta[shard] = (meta, status)
        return status

    def _combined(self, shards: Mapping[int, StoreStatus]) -> StoreStatus:
        """:meth:`StoreStatus.combine`, the last answer again when every shard's status is the one it combined."""
        last = self._last_combined
        if last is not None and last.shards.keys() == shards.keys() and all(last.shards[n] is s for n, s in shards.items()):
            return last
        self._last_combined = combined = StoreStatus.combine(shards)
        return combined

    def _status(self, meta: Mapping[str, str]) -> StoreStatus:
        if not meta.get("generation"):
            return StoreStatus()
        self._check_compatible(meta)
        progress: dict[int, int] = {}
        targets: dict[int, int] = {}
        for name, value in meta.items():
            if name.startswith("p:"):
                progress[int(name[2:])] = int(value)
            elif name.startswith("target:"):
                targets[int(name[7:])] = int(value)
        return StoreStatus(generation=meta["generation"], ready=meta.get("ready") == "1", progress=progress, targets=targets)

    def _check_compatible(self, meta: Mapping[str, str]) -> None:
        layout = meta.get("layout", "1")
        if layout != LAYOUT_VERSION:
            if layout.isdigit() and int(layout) < int(LAYOUT_VERSION):
                raise OlderLayout(
                    f"the state store was written in layout {layout}, older than this sendgate's "
                    f"{LAYOUT_VERSION}: the applier (sendgate preferences) empties and rebuilds it; "
                    "nothing is decided until then"
                )
            raise IncompatibleLayout(
                f"the state store was written in layout {layout} by a newer sendgate; this one reads layout "
                f"{LAYOUT_VERSION}: upgrade it, or rebuild the store for it (sendgate rebuild-state)"
            )
        if meta.get("fingerprint") != self._addressing.secret_fingerprint:
            raise ConfigurationError(
                "the state store was written with a different SENDGATE_STATE__HASH_SECRET: "
                "use the applier's secret, or rebuild the store (sendgate rebuild-state)"
            )
        if meta.get("buckets") != str(self._addressing.buckets):
            raise ConfigurationError(
                f"the state store uses {meta.get('buckets')} buckets per organization but "
                f"SENDGATE_STATE__BUCKETS_PER_ORG is {self._addressing.buckets}: align them or rebuild"
            )
        if meta.get("shards") != str(self._addressing.shards):
            raise ConfigurationError(
                f"the state store is split into {meta.get('shards')} shards but SENDGATE_STATE__SHARDS is "
                f"{self._addressing.shards}: align them, or rebuild the store (sendgate rebuild-state)"
            )

    @staticmethod
    def _pairs(flat: list[Any]) -> dict[str, str]:
        return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}

    @staticmethod
    def _call(operation: Any) -> Any:
        try:
            return operation()
        except (redis.RedisError, RedisClusterException) as exc:  # e.g. SlotNotCoveredError mid-failover
            raise StateUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc
