"""Reading state the gate can trust: ready, same generation, and past the freshness barrier.

SPEC §6.3 (no stale allow): before a batch is decided, the committed end
offsets of ``preferences.changed`` are read; every preference event
acknowledged before the batch's sends lies below them. The batch is decided
only on state whose applied progress has reached those offsets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from worker._native import PreparedBatch
from worker.kafka.offsets import CommittedEndOffsets
from worker.metrics import Metrics
from worker.policy.facts import FactKey
from worker.state.errors import StateNotReady
from worker.state.redis_store import RedisStateStore
from worker.state.store import PackedSnapshot, Snapshot, StateStore, StoreStatus

BARRIER_POLL_SECONDS = 0.002

_Read = TypeVar("_Read", Snapshot, PackedSnapshot)


class FreshStateReader:
    """One state round trip per batch in the steady state; waits (bounded) when behind."""

    def __init__(
        self, *, store: StateStore, end_offsets: CommittedEndOffsets, metrics: Metrics, barrier_timeout_seconds: float
    ) -> None:
        self._store = store
        self._end_offsets = end_offsets
        self._metrics = metrics
        self._timeout = barrier_timeout_seconds

    def read(self, keys: Iterable[FactKey]) -> Snapshot:
        keys = list(keys)
        return self._fresh(lambda: self._store.read(keys))

    def read_packed(self, batch: PreparedBatch) -> PackedSnapshot:
        """:meth:`read` for a batch the gate's core prepared (a Redis store only)."""
        store = self._store
        if not isinstance(store, RedisStateStore):
            raise TypeError(f"the gate's core reads a Redis store, not {type(store).__name__}")
        return self._fresh(lambda: store.read_prepared(batch))

    def _fresh(self, read: Callable[[], _Read]) -> _Read:
        # The barrier and the state are both read after the batch was consumed,
        # so their order does not matter: a later barrier is only stricter.
        # Asking Kafka first lets its answer travel while Redis runs the read.
        barrier_answer = self._end_offsets.request()
        snapshot = read()
        barrier = barrier_answer()
        self._require_ready(snapshot.status)
        if snapshot.status.covers(barrier):
            return snapshot
        self._wait_for(barrier)
        snapshot = read()
        self._require_ready(snapshot.status)
        if not snapshot.status.covers(barrier):  # the store was reset meanwhile
            raise StateNotReady("state fell behind the freshness barrier again")
        return snapshot

    def probe(self) -> None:
        """Check, without reading facts, that a batch arriving now could be decided at once."""
        barrier = self._end_offsets.read()
        status = self._store.status()
        self._require_ready(status)
        if not status.covers(barrier):
            raise StateNotReady("preference applier is behind the freshness barrier")

    def _wait_for(self, barrier: dict[int, int]) -> None:
        started = time.monotonic()
        self._metrics.barrier_waits.inc()
        try:
            while True:
                status = self._store.status()
                self._require_ready(status)
                if status.covers(barrier):
                    return
                if time.monotonic() - started > self._timeout:
                    behind = {p: (status.progress.get(p, 0), o) for p, o in barrier.items() if status.progress.get(p, 0) < o}
                    raise StateNotReady(
                        f"preference applier has not applied acknowledged events within {self._timeout}s "
                        f"(partition: (applied, barrier) {behind})"
                    )
                time.sleep(BARRIER_POLL_SECONDS)
        finally:
            self._metrics.barrier_wait_seconds.observe(time.monotonic() - started)

    @staticmethod
    def _require_ready(status: StoreStatus) -> None:
        if status.generation is None:
            raise StateNotReady("state store is empty (no generation marker): waiting for the applier to rebuild it")
        if not status.ready:
            raise StateNotReady("state store is being rebuilt: waiting until it reaches its targets")
