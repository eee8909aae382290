"""An in-memory state store with the Redis store's semantics, for unit tests and dry runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from worker.config import StateSettings
from worker.policy.facts import FactKey
from worker.state.addressing import FIELD_BYTES, FactAddressing
from worker.state.errors import GenerationLost, ProgressConflict
from worker.state.store import PackedSnapshot, PackedWrites, Snapshot, StoreStatus


class MemoryStateStore:
    """:class:`~worker.state.store.StateStore` in a dict; ``flush()`` imitates FLUSHALL.

    Facts live where Redis keeps them, by (hash key, field) of ``addressing``,
    so what the compiled core packs and what the Python reference names meet
    in one place, as they do in Redis.
    """

    def __init__(self, *, addressing: FactAddressing | None = None) -> None:
        self._addressing = addressing or FactAddressing(StateSettings())
        self.cells: dict[tuple[str, bytes], str] = {}
        self._status = StoreStatus()
        self.round_trips = 0

    def check(self) -> None:
        return None

    def status(self) -> StoreStatus:
        self.round_trips += 1
        return self._status

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        self.round_trips += 1
        facts = list(dict.fromkeys(keys))
        where = self._addressing.locate_all(facts)
        return Snapshot(facts={fact: self.cells.get(cell) for fact, cell in zip(facts, where, strict=True)}, status=self._status)

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
        return PackedSnapshot(found=found, status=self._status)

    def begin_generation(self, targets: Mapping[int, int]) -> StoreStatus:
        self.round_trips += 1
        if self._status.generation is None:
            self._status = self._with_readiness(
                StoreStatus(generation=uuid.uuid4().hex, ready=False, progress={}, targets=dict(targets))
            )
        return self._status

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
        return self._commit(generation, expected, progress, cells)

    def commit_packed(
        self,
        *,
        generation: str,
        expected: Mapping[int, int],
        progress: Mapping[int, int],
        writes: PackedWrites,
    ) -> StoreStatus:
        return self._commit(generation, expected, progress, writes.cells(FIELD_BYTES))

    def _commit(
        self, generation: str, expected: Mapping[int, int], progress: Mapping[int, int], cells: Mapping[tuple[str, bytes], str]
    ) -> StoreStatus:
        self.round_trips += 1
        if self._status.generation != generation:
            raise GenerationLost(f"GENERATION {self._status.generation}")
        for partition in progress:
            stored = self._status.progress.get(partition, -1)
            if stored != expected.get(partition, -1):
                raise ProgressConflict(f"CONFLICT partition {partition} stored {stored}")
        self.cells.update(cells)
        merged = {**self._status.progress, **progress}
        self._status = self._with_readiness(
            StoreStatus(
                generation=generation, ready=self._status.ready, progress=merged, targets=self._status.targets
            )
        )
        return self._status

    def clear(self) -> int:
        count = len(self.cells) + (1 if self._status.generation else 0)
        self.flush()
        return count

    def flush(self) -> None:
        self.cells.clear()
        self._status = StoreStatus()

    @staticmethod
    def _with_readiness(status: StoreStatus) -> StoreStatus:
        if status.ready or not status.covers(status.targets):
            return status
        return StoreStatus(generation=status.generation, ready=True, progress=status.progress, targets=status.targets)
