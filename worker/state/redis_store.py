"""The Redis state store: facts in small hashes, status and progress in one meta hash."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from worker.config import RedisSettings, StateSettings
from worker.errors import ConfigurationError
from worker.policy.facts import FactKey
from worker.state import scripts
from worker.state.addressing import FIELD_BYTES, LAYOUT_VERSION, FactAddressing
from worker.state.errors import GenerationLost, IncompatibleLayout, OlderLayout, ProgressConflict, StateUnavailable
from worker.state.store import PackedSnapshot, PackedWrites, Snapshot, StoreStatus
from worker.state.topology import require_standalone

logger = logging.getLogger(__name__)

SAFE_EVICTION_POLICY = "noeviction"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStateStore:
    """:class:`~worker.state.store.StateStore` on a single Redis server.

    Every batch costs one script call (one round trip). Commits are atomic
    scripts that also check the generation and the expected progress.
    """

    def __init__(self, *, client: redis.Redis, addressing: FactAddressing) -> None:
        self._client = client
        self._addressing = addressing
        self._read = client.register_script(scripts.READ)
        self._commit = client.register_script(scripts.COMMIT)
        self._begin = client.register_script(scripts.BEGIN_GENERATION)

    @classmethod
    def from_settings(cls, redis_settings: RedisSettings, state_settings: StateSettings) -> RedisStateStore:
        client = redis.Redis.from_url(redis_settings.url, **redis_settings.client_kwargs())
        return cls(client=client, addressing=FactAddressing(state_settings))

    @property
    def client(self) -> redis.Redis:
        return self._client

    def close(self) -> None:
        self._client.close()

    def check(self) -> None:
        require_standalone(self._client)  # the scripts span hash slots: a Redis Cluster cannot run them
        policy = self._call(lambda: self._client.info("memory")).get("maxmemory_policy")
        if policy != SAFE_EVICTION_POLICY:
            raise ConfigurationError(
                f"Redis maxmemory-policy is {policy!r}: sendgate needs {SAFE_EVICTION_POLICY!r}, "
                "because an evicted opt-out would let a suppressed message through"
            )

    def status(self) -> StoreStatus:
        flat = self._call(lambda: self._client.hgetall(self._addressing.meta_key))
        return self._status({_text(k): _text(v) for k, v in flat.items()})

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        facts: dict[FactKey, str | None] = dict.fromkeys(keys)
        groups = self._addressing.group(facts)
        reply = self._call(
            lambda: self._read(
                keys=[self._addressing.meta_key, *groups],
                args=[FIELD_BYTES, *(b"".join(fields) for _, fields in groups.values())],
            )
        )
        meta, read = reply[0], reply[1]
        if read != len(facts) or len(reply) % 2:  # never decide on a partial answer
            raise StateUnavailable(f"Redis: read script answered for {read} of {len(facts)} facts")
        # Positions count the facts hash by hash, in the order of ``groups``;
        # every fact not named in the reply is absent, as ``facts`` already says.
        in_reply_order = list(itertools.chain.from_iterable(wanted for wanted, _ in groups.values()))
        for at in range(2, len(reply), 2):
            facts[in_reply_order[reply[at] - 1]] = reply[at + 1].decode()
        return Snapshot(facts=facts, status=self._status(self._pairs(meta)))

    def read_packed(self, keys: list[str], fields: list[bytes], fact_count: int) -> PackedSnapshot:
        """:meth:`read` for facts the gate's core already laid out (its keys and packed fields)."""
        reply = self._call(
            lambda: self._read(keys=[self._addressing.meta_key, *keys], args=[FIELD_BYTES, *fields])
        )
        meta, read = reply[0], reply[1]
        if read != fact_count or len(reply) % 2:  # never decide on a partial answer
            raise StateUnavailable(f"Redis: read script answered for {read} of {fact_count} facts")
        return PackedSnapshot(found=reply[2:], status=self._status(self._pairs(meta)))

    def begin_generation(self, targets: Mapping[int, int]) -> StoreStatus:
        args: list[Any] = [uuid.uuid4().hex, self._addressing.buckets, self._addressing.secret_fingerprint, LAYOUT_VERSION]
        for partition, target in sorted(targets.items()):
            args += [partition, target]
        reply = self._call(lambda: self._begin(keys=[self._addressing.meta_key], args=args))
        status = self._status(self._pairs(reply))
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
        packed = PackedWrites.of(cells)
        return self._commit_script(generation, expected, progress, packed)

    def commit_packed(
        self,
        *,
        generation: str,
        expected: Mapping[int, int],
        progress: Mapping[int, int],
        writes: PackedWrites,
    ) -> StoreStatus:
        return self._commit_script(generation, expected, progress, writes)

    def _commit_script(
        self, generation: str, expected: Mapping[int, int], progress: Mapping[int, int], writes: PackedWrites
    ) -> StoreStatus:
        args: list[Any] = [generation, len(progress)]
        for partition, offset in progress.items():
            args += [partition, expected.get(partition, -1), offset]
        args += [FIELD_BYTES, *writes.writes]
        try:
            reply = self._call(lambda: self._commit(keys=[self._addressing.meta_key, *writes.keys], args=args))
        except StateUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, redis.ResponseError):
                message = str(cause)
                if message.startswith("GENERATION"):
                    raise GenerationLost(f"state generation changed under the applier ({message})") from cause
                if message.startswith("CONFLICT"):
                    raise ProgressConflict(message) from cause
            raise
        return self._status(self._pairs(reply))

    def clear(self) -> int:
        deleted = 0
        pipe_batch: list[bytes] = []
        for key in self._client.scan_iter(match=self._addressing.key_pattern(), count=1000):
            pipe_batch.append(key)
            if len(pipe_batch) >= 1000:
                deleted += self._client.unlink(*pipe_batch)
                pipe_batch.clear()
        if pipe_batch:
            deleted += self._client.unlink(*pipe_batch)
        return deleted

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

    @staticmethod
    def _pairs(flat: list[Any]) -> dict[str, str]:
        return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}

    @staticmethod
    def _call(operation: Any) -> Any:
        try:
            return operation()
        except redis.RedisError as exc:
            raise StateUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc
