"""The gate's fail-closed check per shard: every shard a batch reads must be ready and past the barrier."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from worker.gate.freshness import FreshStateReader
from worker.metrics import Metrics
from worker.policy.facts import FLAG_SET, FactKey, FactKind
from worker.state.errors import StateNotReady
from worker.state.memory_store import MemoryStateStore
from worker.state.store import StoreStatus

BARRIER = {0: 5, 1: 3}


class FixedEnds:
    def read(self) -> dict[int, int]:
        return dict(BARRIER)

    def request(self) -> Callable[[], dict[int, int]]:
        return lambda: dict(BARRIER)


def fact(i: int) -> FactKey:
    return FactKey("org", FactKind.EMAIL_OPT_OUT_ORGANIZATION, (f"p{i}@example.com",))


def populated() -> MemoryStateStore:
    store = MemoryStateStore()
    status = store.begin_generation(BARRIER)
    store.commit(generation=status.generation or "", expected={}, progress=BARRIER, writes={fact(i): FLAG_SET for i in range(50)})
    return store


def reader(store: MemoryStateStore) -> FreshStateReader:
    return FreshStateReader(store=store, end_offsets=FixedEnds(), metrics=Metrics(), barrier_timeout_seconds=0.05)  # type: ignore[arg-type]


def shard_of(store: MemoryStateStore, key: FactKey) -> int:
    return store.shard_of(store._addressing.locate(key)[0])


def test_a_batch_whose_shards_are_all_current_is_read():
    store = populated()
    snapshot = reader(store).read([fact(i) for i in range(50)])
    assert all(value == FLAG_SET for value in snapshot.facts.values())
    assert len(snapshot.status.shards) > 1


def test_a_lost_shard_fails_the_batch_closed_at_once():
    store = populated()
    store.flush(shard_of(store, fact(7)))
    with pytest.raises(StateNotReady, match="empty"):
        reader(store).read([fact(i) for i in range(50)])


def test_a_shard_behind_the_barrier_fails_the_batch_closed():
    store = populated()
    behind = shard_of(store, fact(7))
    shards = store._shards
    shards[behind] = StoreStatus(generation=shards[behind].generation, ready=True, progress={0: 5, 1: 2}, targets=BARRIER)
    with pytest.raises(StateNotReady, match="has not applied"):
        reader(store).read([fact(7)])


def test_a_shard_being_rebuilt_fails_the_batch_closed():
    store = populated()
    rebuilding = shard_of(store, fact(7))
    store.flush(rebuilding)
    store.begin_generation({0: 5, 1: 3})
    with pytest.raises(StateNotReady, match="being rebuilt"):
        reader(store).read([fact(7)])


def test_a_shard_the_batch_does_not_read_does_not_hold_it_back():
    store = populated()
    needed = shard_of(store, fact(7))
    other = (needed + 1) % store.shard_count
    store.flush(other)
    assert reader(store).read([fact(7)]).facts[fact(7)] == FLAG_SET


def test_a_combined_status_is_only_as_good_as_its_worst_shard():
    ready = StoreStatus(generation="g", ready=True, progress={0: 5, 1: 3}, targets={0: 1})
    behind = StoreStatus(generation="g", ready=True, progress={0: 4}, targets={0: 2})
    combined = StoreStatus.combine({0: ready, 1: behind})
    assert combined.progress == {0: 4, 1: 0} and combined.targets == {0: 2} and combined.ready
    assert not combined.covers(BARRIER)
    assert StoreStatus.combine({0: ready, 1: StoreStatus()}).generation is None
    assert StoreStatus.combine({0: ready, 1: StoreStatus(generation="h", ready=False)}).not_ready_shards() == [1]


def test_the_state_a_decision_names_stays_short_when_shards_hold_generations_of_their_own():
    shards = {n: StoreStatus(generation=f"g{n:02d}", ready=True, progress={0: 5}) for n in range(16)}
    assert StoreStatus.combine(shards).describe() == "gen=g00+15;applied=0:5"
    assert StoreStatus.combine({0: shards[0]}).describe() == "gen=g00;applied=0:5"
