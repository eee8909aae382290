"""An in-memory state store with the Redis store's semantics, for unit tests and dry runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from worker.config import StateSettings
from worker.policy.facts import FactKey
from worker.state.addressing import FIELD_BYTES, FactAddressing
from worker.state.errors import GenerationLost, ProgressConflict
from worker.state.store import PackedSnapshot, PackedWrites, ShardCommit, Snapshot, StoreStatus


class MemoryStateStore:
    """:class:`~worker.state.store.StateStore` in a dict; ``flush()`` imitates FLUSHALL, ``flush(shard)`` one lost shard.

    Facts live where Redis keeps them, by (hash key, field) of ``addressing``,
    so what the compiled core packs and what the Python reference names meet
    in one place, as they do in Redis.
    """

    def __init__(self, *, addressing: FactAddressing | None = None) -> None:
        self._addressing = addressing or FactAddressing(StateSettings())
        self.cells: dict[tuple[str, bytes], str] = {}
        self._shards: dict[int, StoreStatus] = dict.fromkeys(range(self._addressing.shards), StoreStatus())
        self.round_trips = 0

    @property
    def shard_count(self) -> int:
        return self._addressing.shards

    def shard_of(self, key: str) -> int:
        return self._addressing.shard_of(key)

    def check(self) -> None:
        return None

    def status(self) -> StoreStatus:
        self.round_trips += 1
        return StoreStatus.combine(self._shards)

    def shard_status(self, shard: int) -> StoreStatus:
        return self._shards[shard]

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        self.round_trips += 1
        facts = list(dict.fromkeys(keys))
        where = self._addressing.locate_all(facts)
        return Snapshot(
            facts={fact: self.cells.get(cell) for fact, cell in zip(facts, where, strict=True)},
            status=self._status_of({self.shard_of(key) for key, _ in where}),
        )

    def read_packed(self, keys: list[str], fields: list[bytes], fact_count: int) -> PackedSnapshot:
        """The read script's reply: (position, value) of each present field, positions from 1 hash by hash."""
        self.round_trips += 1
        found: list[Any] = []
        position = 0
        for key, packed in zip(keys, fields, strict=True):
            for at in range(0, len(packed), FIELD_BYTES):
                position += 1
                value = self.cells.get((key, packed[at : at + FIELD_BYTES]))
                if value is not None:
                    found += [position, value.encode()]
        if position != fact_count:
            raise ValueError(f"read laid out {position} fields for {fact_count} facts")
        return PackedSnapshot(found=found, status=self._status_of({self.shard_of(key) for key in keys}))

    def begin_generation(self, targets: Mapping[int, int]) -> StoreStatus:
        self.round_trips += 1
        generation = uuid.uuid4().hex
        for shard, status in self._shards.items():
            if status.generation is None:
                self._shards[shard] = self._with_readiness(
                    StoreStatus(generation=generation, ready=False, progress={}, targets=dict(targets))
                )
        return StoreStatus.combine(self._shards)

    def commit(
        self,
        *,
        generation: str,
        expected: Mapping[int, int],
        progress: Mapping[int, int],
        writes: Mapping[FactKey, str],
    ) -> StoreStatus:
        facts = list(writes)
        cells = dict(zip(self._addressing.locate_all(facts), (writes[fact] for fact in facts), strict=True))
        every = ShardCommit(generation=generation, expected=expected, progress=progress)
        return self._commit(dict.fromkeys(self._shards, every), cells)

    def commit_shards(self, *, shards: Mapping[int, ShardCommit], writes: PackedWrites) -> StoreStatus:
        return self._commit(shards, writes.cells(FIELD_BYTES))

    def _commit(self, shards: Mapping[int, ShardCommit], cells: Mapping[tuple[str, bytes], str]) -> StoreStatus:
        self.round_trips += 1
        strays = sorted({self.shard_of(key) for key, _ in cells} - set(shards))
        if strays:
            raise ValueError(f"writes for shards {strays}, which this commit does not name")
        failure: Exception | None = None
        committed: dict[int, StoreStatus] = {}
        for shard, part in sorted(shards.items()):
            stored = self._shards[shard]
            if stored.generation != part.generation:
                failure = failure or GenerationLost(f"shard {shard}: GENERATION {stored.generation}", shard=shard)
                continue
            conflict = next((p for p in part.progress if stored.progress.get(p, -1) != part.expected.get(p, -1)), None)
            if conflict is not None:
                failure = failure or ProgressConflict(
                    f"shard {shard}: CONFLICT partition {conflict} stored {stored.progress.get(conflict, -1)}", shard=shard
                )
                continue
            self.cells.update({cell: value for cell, value in cells.items() if self.shard_of(cell[0]) == shard})
            self._shards[shard] = committed[shard] = self._with_readiness(
                StoreStatus(
                    generation=stored.generation,
                    ready=stored.ready,
                    progress={**stored.progress, **part.progress},
                    targets=stored.targets,
                )
            )
        if failure is not None:
            raise failure
        return StoreStatus.combine(committed)

    def clear(self) -> int:
        count = len(self.cells) + sum(1 for status in self._shards.values() if status.generation)
        self.flush()
        return count

    def flush(self, shard: int | None = None) -> None:
        """Empty the store (FLUSHALL), or only ``shard`` (its node came back empty)."""
        if shard is None:
            self.cells.clear()
            self._shards = dict.fromkeys(self._shards, StoreStatus())
            return
        self.cells = {cell: value for cell, value in self.cells.items() if self.shard_of(cell[0]) != shard}
        self._shards[shard] = StoreStatus()

    def _status_of(self, shards: set[int]) -> StoreStatus:
        return StoreStatus.combine({n: self._shards[n] for n in sorted(shards)}) if shards else StoreStatus.combine(self._shards)

    @staticmethod
    def _with_readiness(status: StoreStatus) -> StoreStatus:
        if status.ready or not status.covers(status.targets):
            return status
        return StoreStatus(generation=status.generation, ready=True, progress=status.progress, targets=status.targets)
