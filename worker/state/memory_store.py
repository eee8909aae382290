"""An in-memory state store with the Redis store's semantics, for unit tests and dry runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from worker.policy.facts import FactKey
from worker.state.errors import GenerationLost, ProgressConflict
from worker.state.store import Snapshot, StoreStatus


class MemoryStateStore:
    """:class:`~worker.state.store.StateStore` in a dict; ``flush()`` imitates FLUSHALL."""

    def __init__(self) -> None:
        self.facts: dict[FactKey, str] = {}
        self._status = StoreStatus()
        self.round_trips = 0

    def check(self) -> None:
        return None

    def status(self) -> StoreStatus:
        self.round_trips += 1
        return self._status

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        self.round_trips += 1
        return Snapshot(facts={key: self.facts.get(key) for key in keys}, status=self._status)

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
        self.round_trips += 1
        if self._status.generation != generation:
            raise GenerationLost(f"GENERATION {self._status.generation}")
        for partition in progress:
            stored = self._status.progress.get(partition, -1)
            if stored != expected.get(partition, -1):
                raise ProgressConflict(f"CONFLICT partition {partition} stored {stored}")
        self.facts.update(writes)
        merged = {**self._status.progress, **progress}
        self._status = self._with_readiness(
            StoreStatus(
                generation=generation, ready=self._status.ready, progress=merged, targets=self._status.targets
            )
        )
        return self._status

    def clear(self) -> int:
        count = len(self.facts) + (1 if self._status.generation else 0)
        self.flush()
        return count

    def flush(self) -> None:
        self.facts.clear()
        self._status = StoreStatus()

    @staticmethod
    def _with_readiness(status: StoreStatus) -> StoreStatus:
        if status.ready or not status.covers(status.targets):
            return status
        return StoreStatus(generation=status.generation, ready=True, progress=status.progress, targets=status.targets)
