"""What every state store offers the gate and the applier.

The store keeps suppression facts together with the preference applier's
progress (per partition of ``preferences.changed``, the next offset not yet
applied) and a *generation marker*. The marker tells a populated store from an
emptied or new one: when it is missing, nothing may be allowed until the
applier has rebuilt the state from the beginning of the topic up to the
targets recorded when the generation began.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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

    def covers(self, offsets: Mapping[int, int]) -> bool:
        """True when the applied progress reaches every given partition offset."""
        return all(self.progress.get(partition, 0) >= offset for partition, offset in offsets.items())

    def describe(self) -> str:
        """A compact, log- and header-friendly account of the state a decision saw."""
        applied = ",".join(f"{p}:{o}" for p, o in sorted(self.progress.items()))
        return f"gen={self.generation or '-'};applied={applied}"


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



class StateStore(Protocol):
    """The operations the workers need; all reads of one batch are one round trip."""

    def check(self) -> None:
        """Refuse unsafe configurations (e.g. a Redis that evicts keys)."""

    def status(self) -> StoreStatus: ...

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        """Read the given facts and the status at once."""

    def read_packed(self, keys: list[str], fields: list[bytes], fact_count: int) -> PackedSnapshot:
        """:meth:`read` for facts the compiled core laid out: its hash keys and their packed fields."""

    def begin_generation(self, targets: Mapping[int, int]) -> StoreStatus:
        """Start a new, empty generation that becomes ready once progress reaches ``targets``."""

    def commit(
        self,
        *,
        generation: str,
        expected: Mapping[int, int],
        progress: Mapping[int, int],
        writes: Mapping[FactKey, str],
    ) -> StoreStatus:
        """Atomically write facts and advance progress.

        ``expected`` holds the progress this applier believes is stored (-1 for
        none); any difference raises :class:`ProgressConflict`, and a missing or
        different generation raises :class:`GenerationLost`, so a zombie or an
        emptied Redis never receives half a history.
        """

    def commit_packed(
        self,
        *,
        generation: str,
        expected: Mapping[int, int],
        progress: Mapping[int, int],
        writes: PackedWrites,
    ) -> StoreStatus:
        """:meth:`commit` for writes the compiled core packed (same checks, same atomicity)."""

    def clear(self) -> int:
        """Delete every key of this store (facts and metadata); returns how many."""
