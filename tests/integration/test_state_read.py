"""The compiled core's own state read on a real Redis (``PreparedBatch.read_state``, one MULTI/EXEC).

It must answer exactly what the read script answers (``RedisStateStore.read_scripted``,
the reference path a cluster still takes), and every way it can fail must fail
the batch closed (``StateUnavailable``) and leave the store usable for the next one.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from tests.unit.test_native_core import CODEC, scenario
from worker._native import read_facts
from worker.codec import AvroCodec
from worker.config import Settings
from worker.gate.core import build_core
from worker.policy.decision import DecisionPolicy
from worker.state.addressing import FactAddressing
from worker.state.errors import StateUnavailable
from worker.state.redis_store import RedisStateStore

REQUEST = {
    "message_id": "m1", "org_id": "org-1", "user_id": "u1", "contact_id": "c1", "channel": "EMAIL",
    "category": "MARKETING", "to": "Jane.Doe@example.com", "from": "agent@lender.example", "requested_at": 1,
    "campaign_id": None, "payload": None, "attributes": {},
}  # fmt: skip


def _store(redis_url: str, state: Any, **client_options: Any) -> RedisStateStore:
    return RedisStateStore(addressing=FactAddressing(state), connector=lambda: redis.Redis.from_url(redis_url, **client_options))


def _ready_store_and_batch(settings: Settings, redis_url: str, **client_options: Any) -> tuple[RedisStateStore, Any]:
    """A store holding one fact of the request, and the request's prepared batch."""
    codec = AvroCodec.from_settings(settings)
    value = codec.encode("SendRequest", REQUEST)
    store = _store(redis_url, settings.state, **client_options)
    status = store.begin_generation({})
    held = DecisionPolicy().prepare(codec.decode_send_head(value)).keys[:1]
    store.commit(generation=status.generation, expected={}, progress={0: 1}, writes=dict.fromkeys(held, "1"))
    return store, build_core(settings, codec).prepare([value])


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=scenario())
def test_the_cores_read_answers_what_the_read_script_answers(case: tuple[list[bytes | None], dict, Any], services) -> None:
    values, facts, configured = case
    state = configured.state.model_copy(update={"key_prefix": f"sgt-read-{uuid.uuid4().hex[:8]}"})
    store = _store(services.redis_url, state)
    try:
        status = store.begin_generation({0: 1})
        store.commit(generation=status.generation, expected={}, progress={0: 1}, writes=facts)
        batch = build_core(configured.model_copy(update={"state": state}), CODEC).prepare(values)

        expected = store.read_scripted(batch.keys, batch.fields, batch.fact_count)
        actual = store.read_prepared(batch)

        assert actual == expected
        assert store.read_packed(batch.keys, batch.fields, batch.fact_count) == expected  # the applier's way in
        assert len(actual.found) == 2 * len(facts)  # (position, value) of every fact held, none other
    finally:
        store.clear()
        store.close()


def test_a_fact_hash_of_the_wrong_type_fails_the_read_and_the_next_read_is_answered(settings, services, redis_client) -> None:
    store, batch = _ready_store_and_batch(settings, services.redis_url)
    expected = store.read_scripted(batch.keys, batch.fields, batch.fact_count)
    assert expected.found  # the held fact
    stray = batch.keys[0]
    kept = redis_client.dump(stray)
    redis_client.delete(stray)
    redis_client.set(stray, "not a hash")

    with pytest.raises(StateUnavailable, match="WRONGTYPE"):
        store.read_prepared(batch)

    redis_client.delete(stray)
    redis_client.restore(stray, 0, kept)
    assert store.read_prepared(batch) == expected


def test_a_redis_that_stops_answering_fails_the_read_within_the_socket_timeout(settings, services, redis_client) -> None:
    store, batch = _ready_store_and_batch(settings, services.redis_url, socket_timeout=0.3)
    expected = store.read_prepared(batch)  # the pool now holds a connected connection
    redis_client.client_pause(2000, all=True)
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="TimeoutError"):
            store.read_prepared(batch)
        assert time.monotonic() - started < 1.5
    finally:
        redis_client.client_unpause()
    # The connection with the late reply on it was closed, not handed to the next read.
    assert store.read_prepared(batch) == expected


def test_a_connection_killed_between_reads_is_replaced(settings, services, redis_client) -> None:
    store, batch = _ready_store_and_batch(settings, services.redis_url)
    expected = store.read_prepared(batch)
    store.client.client_setname("sgt-read-victim")
    victims = [c for c in redis_client.client_list() if c.get("name") == "sgt-read-victim"]
    assert victims
    for victim in victims:
        redis_client.client_kill_filter(_id=victim["id"])

    assert store.read_prepared(batch) == expected


def test_a_read_naming_a_shard_the_store_lacks_is_refused_before_anything_is_sent(settings) -> None:
    codec = AvroCodec.from_settings(settings)
    batch = build_core(settings, codec).prepare([codec.encode("SendRequest", REQUEST)])
    assert batch.keys
    with pytest.raises(ValueError, match="has no meta key"):
        batch.read_state(-1, [], 1.0)  # never reaches the (invalid) socket
    with pytest.raises(ValueError, match="positive number of seconds"):
        batch.read_state(-1, FactAddressing(settings.state).meta_keys, 0.0)


def test_facts_named_unevenly_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="one of each per key"):
        read_facts(-1, ["k1", "k2"], [b""], [0, 0], ["m0"], 1.0)
