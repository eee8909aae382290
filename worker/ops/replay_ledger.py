"""The replay ledger: which messages ``sendgate replay`` released, so none is released twice.

One Redis key per (organization, message_id), a keyed BLAKE2b digest of both
with the store's hash secret, under ``<key_prefix>-replay:`` (beside, not
under, the store's keys: ``rebuild-state`` empties those, the ledger must
survive it). Values move claim → done with compare-and-set scripts; see
:mod:`worker.ops.replayer` for how a run uses them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster

from worker.config import StateSettings
from worker.errors import ServiceUnreachable
from worker.state.connection import StateClient

_CONFIRM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_ABANDON = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger value: ``c|token|claimed_at`` (claimed) or ``d|token|released_at|partition:offset`` (done)."""

    done: bool
    token: str
    at_ms: int
    where: str = ""

    def encode(self) -> str:
        if self.done:
            return f"d|{self.token}|{self.at_ms}|{self.where}"
        return f"c|{self.token}|{self.at_ms}"

    @classmethod
    def decode(cls, raw: str) -> LedgerEntry:
        parts = raw.split("|")
        if parts[0] not in ("c", "d") or len(parts) < 3:
            raise ValueError("not a replay ledger value")
        return cls(done=parts[0] == "d", token=parts[1], at_ms=int(parts[2]), where=parts[3] if len(parts) > 3 else "")


class ReplayLedger:
    """Which messages replay has released, in Redis; keys are keyed digests, never raw ids."""

    def __init__(self, *, client: StateClient, state: StateSettings, ttl_ms: int) -> None:
        self._client = client
        self._secret = state.hash_secret.get_secret_value().encode()
        self.prefix = f"{state.key_prefix}-replay:"
        self._ttl_ms = ttl_ms
        self._confirm = client.register_script(_CONFIRM)
        self._take_over = client.register_script(_TAKE_OVER)
        self._abandon = client.register_script(_ABANDON)

    def key(self, org_id: str, message_id: str) -> str:
        identity = f"{org_id}\x1f{message_id}".encode()
        digest = hashlib.blake2b(identity, key=self._secret, digest_size=16, person=b"sendgate-replay")
        return self.prefix + digest.hexdigest()

    def claim(self, claims: list[tuple[str, LedgerEntry]]) -> list[bool]:
        """SET NX every claim in one round trip; True where this call created the key."""

        def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for key, entry in claims:
                pipe.set(key, entry.encode(), nx=True, px=self._ttl_ms)
            return pipe.execute()

        return [bool(reply) for reply in self._call(run)]

    def get(self, keys: list[str]) -> list[LedgerEntry | None]:
        if not keys:
            return []
        # The keys are in many slots: a cluster client reads them slot by slot (no atomicity is needed).
        client = self._client
        values = self._call(lambda: client.mget_nonatomic(keys) if isinstance(client, RedisCluster) else client.mget(keys))
        entries: list[LedgerEntry | None] = []
        for raw in values:
            if raw is None:
                entries.append(None)
                continue
            try:
                entries.append(LedgerEntry.decode(raw.decode() if isinstance(raw, bytes) else raw))
            except ValueError:
                # Not ours to interpret: treat as released (never re-send on doubt).
                entries.append(LedgerEntry(done=True, token="?", at_ms=0))
        return entries

    def confirm(self, key: str, claim: LedgerEntry, done: LedgerEntry) -> bool:
        return bool(self._call(lambda: self._confirm(keys=[key], args=[claim.encode(), done.encode()])))

    def take_over(self, key: str, old: LedgerEntry, new: LedgerEntry) -> bool:
        return bool(self._call(lambda: self._take_over(keys=[key], args=[old.encode(), new.encode(), self._ttl_ms])))

    def abandon(self, key: str, claim: LedgerEntry) -> bool:
        """Drop our claim of a message that was certainly not handed to Kafka."""
        return bool(self._call(lambda: self._abandon(keys=[key], args=[claim.encode()])))

    @staticmethod
    def _call(operation: Callable[[], Any]) -> Any:
        try:
            return operation()
        except redis.RedisError as exc:
            raise ServiceUnreachable(f"Redis (replay ledger): {type(exc).__name__}: {exc}") from exc
