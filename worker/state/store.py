"""What every state store offers the gate and the applier.

The store is split into shards (:mod:`worker.state.addressing`). Each shard
keeps its suppression facts together with the preference applier's progress
(per partition of ``preferences.changed``, the next offset not yet applied to
that shard) and a *generation marker*. The marker tells a populated shard from
an emptied or new one: when it is missing, nothing read from that shard may be
allowed until the applier has rebuilt it from the beginning of the topic up to
the targets recorded when its generation began. Every shard is always a
consistent prefix of the history: its facts and its progress are committed
together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.policy.facts import FactKey


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """The store's metadata: generation, readiness and the applier's progress."""

    generation: str | None = None
    ready: bool = False
    progress: Mapping[int, int] = field(default_factory=dict)
    targets: Mapping[int, int] = field(default_factory=dict)
    shards: Mapping[int, StoreStatus] = field(default_factory=dict)
    """Per shard, its own status (empty in a shard's own status)."""

    @classmethod
    def combine(cls, shards: Mapping[int, StoreStatus]) -> StoreStatus:
        """The status of several shards read together: only as good as the worst of them.

        No generation when any shard has none; ready only when all are; per
        partition the least progress (a shard without a partition has 0).
        """
        if not shards:
            return cls()
        parts = list(shards.values())
        generations = {part.generation for part in parts}
        partitions = {p for part in parts for p in part.progress}
        targeted = {p for part in parts for p in part.targets}
        return cls(
            generation=None if None in generations else "+".join(sorted(g for g in generations if g)),
            ready=all(part.ready for part in parts),
            progress={p: min(part.progress.get(p, 0) for part in parts) for p in partitions},
            targets={p: max(part.targets.get(p, 0) for part in parts) for p in targeted},
            shards=dict(shards),
        )

    def covers(self, offsets: Mapping[int, int]) -> bool:
        """True when the applied progress reaches every given partition offset."""
        return all(self.progress.get(partition, 0) >= offset for partition, offset in offsets.items())

    def not_ready_shards(self) -> list[int]:
        """The shards (of a combined status) that are empty or being rebuilt."""
        return sorted(n for n, part in self.shards.items() if part.generation is None or not part.ready)

    def describe(self) -> str:
        """A compact, log- and header-friendly account of the state a decision saw."""
        applied = ",".join(f"{p}:{o}" for p, o in sorted(self.progress.items()))
        generations = (self.generation or "-").split("+")
        # Shards rebuilt alone hold generations of their own: name one, count the others (a header stays short).
        generation = generations[0] if len(generations) == 1 else f"{generations[0]}+{len(generations) - 1}"
        return f"gen={generation};applied={applied}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Facts read for a batch, and the store's status read in the same round trip."""

    facts: Mapping[FactKey, str | None]
    status: StoreStatus


@dataclass(frozen=True, slots=True)
class PackedSnapshot:
    """A batch read laid out by the compiled core: the read script's (position, value) pairs, and the status."""

    found: list[Any]
    status: StoreStatus


@dataclass(frozen=True, slots=True)
class ShardCommit:
    """One shard's part of an applier's commit: its generation, the progress expected there, the new progress."""

    generation: str
    expected: Mapping[int, int]
    progress: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class PackedWrites:
    """Fact writes laid out as the commit script takes them.

    ``keys`` are the Redis hashes written; ``writes`` holds, per hash in that
    order, one string: for each fact its field, its value's length (4 bytes,
    big-endian) and its value.
    """

    keys: list[str]
    writes: list[bytes]

    @classmethod
    def of(cls, cells: Mapping[tuple[str, bytes], str]) -> PackedWrites:
        """The writes of ``(hash key, field) -> value``, packed."""
        by_hash: dict[str, bytearray] = {}
        for (key, hash_field), value in cells.items():
            encoded = value.encode()
            by_hash.setdefault(key, bytearray()).extend(hash_field + len(encoded).to_bytes(4, "big") + encoded)
        return cls(list(by_hash), [bytes(packed) for packed in by_hash.values()])

    def cells(self, field_size: int) -> dict[tuple[str, bytes], str]:
        """``(hash key, field) -> value`` of these writes (the later of a repeated field wins, as in HSET)."""
        out: dict[tuple[str, bytes], str] = {}
        for key, packed in zip(self.keys, self.writes, strict=True):
            pos = 0
            while pos < len(packed):
                field = packed[pos : pos + field_size]
                length = int.from_bytes(packed[pos + field_size : pos + field_size + 4], "big")
                start = pos + field_size + 4
                out[(key, field)] = packed[start : start + length].decode()
                pos = start + length
        return out

    def by_shard(self, shard_of: Callable[[str], int]) -> dict[int, PackedWrites]:
        """These writes split by the shard of their hash key."""
        split: dict[int, tuple[list[str], list[bytes]]] = {}
        for key, packed in zip(self.keys, self.writes, strict=True):
            keys, writes = split.setdefault(shard_of(key), ([], []))
            keys.append(key)
            writes.append(packed)
        return {shard: PackedWrites(keys, writes) for shard, (keys, writes) in split.items()}


class StateStore(Protocol):
    """The operations the workers need; all reads of one batch are one round trip per Redis node."""

    @property
    def shard_count(self) -> int:
        """How many shards the store is split into."""

    def shard_of(self, key: str) -> int:
        """The shard of one of the store's hash keys."""

    def check(self) -> None:
        """Refuse unsafe configurations (e.g. a Redis that evicts keys)."""

    def status(self) -> StoreStatus:
        """Every shard's status, combined (:meth:`StoreStatus.combine`)."""

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        """Read the given facts and the status at once."""

    def read_packed(self, keys: list[str], fields: list[bytes], fact_count: int) -> PackedSnapshot:
        """:meth:`read` for facts the compiled core laid out: its hash keys and their packed fields."""

    def begin_generation(self, targets: Mapping[int, int]) -> StoreStatus:
        """Start a new, empty generation in every shard that has none; it becomes ready once progress reaches ``targets``.

        Shards that hold a generation keep it (a lost shard is rebuilt alone).
        """

    def commit(
        self,
        *,
        generation: str,
        expected: Mapping[int, int],
        progress: Mapping[int, int],
        writes: Mapping[FactKey, str],
    ) -> StoreStatus:
        """Write facts and advance progress in every shard, each shard atomically (tools and tests).

        ``expected`` holds the progress this applier believes is stored (-1 for
        none); any difference raises :class:`ProgressConflict`, and a missing or
        different generation raises :class:`GenerationLost`, so a zombie or an
        emptied Redis never receives half a history.
        """

    def commit_shards(self, *, shards: Mapping[int, ShardCommit], writes: PackedWrites) -> StoreStatus:
        """Commit each shard of ``shards`` atomically: its writes and its progress, checked as :meth:`commit` does.

        Every write must belong to a shard of ``shards``. Shards succeed or fail
        one by one; the first failure (:class:`GenerationLost` or
        :class:`ProgressConflict`, naming the shard) is raised after all were
        tried, so the caller resynchronises with what the shards hold.
        """

    def clear(self) -> int:
        """Delete every key of this store (facts and metadata); returns how many."""
