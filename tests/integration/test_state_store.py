"""The same store contract checked against the in-memory fake, a standalone Redis and a real Redis Cluster."""

from __future__ import annotations

import pytest

from worker.codec import AvroCodec
from worker.config import RedisSettings, StateSettings
from worker.errors import ConfigurationError
from worker.gate.core import build_core
from worker.policy.decision import DecisionPolicy
from worker.policy.facts import FLAG_SET, FactKey, FactKind
from worker.state.addressing import FactAddressing
from worker.state.connection import connect
from worker.state.errors import GenerationLost, ProgressConflict, StateUnavailable
from worker.state.memory_store import MemoryStateStore
from worker.state.redis_store import RedisStateStore
from worker.state.store import PackedWrites, ShardCommit

EMAIL_FACT = FactKey("org-1", FactKind.EMAIL_OPT_OUT_ORGANIZATION, ("jane.doe@example.com",))
PHONE_FACT = FactKey("org-1", FactKind.SMS_CONSENT, ("+15555550123",))
OTHER_ORG_FACT = FactKey("org-2", FactKind.EMAIL_OPT_OUT_ORGANIZATION, ("jane.doe@example.com",))


class FlushableRedisStore(RedisStateStore):
    def flush(self, shard: int | None = None) -> None:
        """FLUSHALL, or one shard's keys gone (its node came back empty)."""
        if shard is None:
            self.clear()
            return
        prefix = self._addressing.meta_keys[shard].rsplit(":", 1)[0]
        keys = list(self.client.scan_iter(match=f"{prefix}:*"))
        if keys:
            self.client.unlink(*keys)

    def shard_status(self, shard: int):  # type: ignore[no-untyped-def]
        return self.status().shards[shard]


@pytest.fixture(params=["memory", "redis", "cluster"])
def store(request, settings):
    if request.param == "memory":
        return MemoryStateStore(addressing=FactAddressing(settings.state))
    if request.param == "redis":
        redis_client = request.getfixturevalue("redis_client")
        return FlushableRedisStore(client=redis_client, addressing=FactAddressing(settings.state))
    on_cluster = request.getfixturevalue("cluster_settings")
    cluster_store = FlushableRedisStore(client=connect(on_cluster.redis), addressing=FactAddressing(settings.state))
    request.addfinalizer(cluster_store.close)
    return cluster_store


def test_an_empty_store_has_no_generation_and_no_facts(store):
    snapshot = store.read([EMAIL_FACT])
    assert snapshot.facts == {EMAIL_FACT: None}
    assert snapshot.status.generation is None
    assert not snapshot.status.ready


def test_a_generation_becomes_ready_when_progress_reaches_its_targets(store):
    status = store.begin_generation({0: 2, 1: 0})
    assert status.generation and not status.ready
    status = store.commit(generation=status.generation, expected={}, progress={0: 1}, writes={EMAIL_FACT: FLAG_SET})
    assert not status.ready
    status = store.commit(generation=status.generation, expected={0: 1}, progress={0: 2}, writes={})
    assert status.ready
    assert store.status().progress == {0: 2}


def test_a_generation_over_an_empty_topic_is_ready_at_once(store):
    assert store.begin_generation({0: 0, 1: 0}).ready


def test_begin_generation_keeps_an_existing_generation(store):
    first = store.begin_generation({0: 5})
    assert store.begin_generation({0: 9}).generation == first.generation


def test_facts_are_scoped_by_organization(store):
    status = store.begin_generation({})
    store.commit(generation=status.generation, expected={}, progress={0: 1}, writes={EMAIL_FACT: FLAG_SET, PHONE_FACT: "in"})
    snapshot = store.read([EMAIL_FACT, PHONE_FACT, OTHER_ORG_FACT])
    assert snapshot.facts == {EMAIL_FACT: FLAG_SET, PHONE_FACT: "in", OTHER_ORG_FACT: None}
    assert snapshot.status.progress == {0: 1}


def test_a_commit_with_unexpected_progress_is_refused_and_writes_nothing(store):
    status = store.begin_generation({})
    store.commit(generation=status.generation, expected={}, progress={0: 3}, writes={})
    with pytest.raises(ProgressConflict):
        store.commit(generation=status.generation, expected={0: 1}, progress={0: 4}, writes={EMAIL_FACT: FLAG_SET})
    assert store.read([EMAIL_FACT]).facts[EMAIL_FACT] is None
    assert store.status().progress == {0: 3}


def test_a_commit_after_the_store_was_emptied_reports_the_lost_generation(store):
    status = store.begin_generation({})
    store.flush()
    with pytest.raises(GenerationLost):
        store.commit(generation=status.generation, expected={}, progress={0: 1}, writes={EMAIL_FACT: FLAG_SET})
    assert store.read([EMAIL_FACT]).facts[EMAIL_FACT] is None


def test_every_shard_has_its_own_generation_and_progress(store):
    status = store.begin_generation({0: 1})
    assert sorted(status.shards) == list(range(store.shard_count)) and store.shard_count == 16
    status = store.commit(generation=status.generation, expected={}, progress={0: 1}, writes={})
    assert status.ready and all(part.ready and part.progress == {0: 1} for part in status.shards.values())


def test_a_lost_shard_fails_alone_and_begins_anew_while_the_others_keep_theirs(store):
    status = store.begin_generation({})
    store.commit(generation=status.generation, expected={}, progress={0: 5}, writes={EMAIL_FACT: FLAG_SET, PHONE_FACT: "in"})
    addressing = store._addressing
    email_key, _ = addressing.locate(EMAIL_FACT)
    lost = store.shard_of(email_key)
    store.flush(lost)
    snapshot = store.read([EMAIL_FACT])
    assert snapshot.facts[EMAIL_FACT] is None
    assert snapshot.status.generation is None and snapshot.status.not_ready_shards() == [lost]  # the gate fails closed on it
    phone_key, _ = addressing.locate(PHONE_FACT)
    if store.shard_of(phone_key) != lost:
        assert store.read([PHONE_FACT]).status.ready
    every = ShardCommit(generation=status.generation, expected={0: 5}, progress={0: 6})
    with pytest.raises(GenerationLost) as lost_error:
        store.commit_shards(shards=dict.fromkeys(range(store.shard_count), every), writes=PackedWrites([], []))
    assert lost_error.value.shard == lost
    assert all(part.progress == {0: 6} for n, part in store.status().shards.items() if n != lost)
    again = store.begin_generation({0: 6})
    assert again.shards[lost].generation not in (None, status.generation) and not again.shards[lost].ready
    assert {again.shards[n].generation for n in again.shards if n != lost} == {status.generation}
    rebuilt = ShardCommit(generation=again.shards[lost].generation, expected={}, progress={0: 6})
    assert store.commit_shards(shards={lost: rebuilt}, writes=PackedWrites([], [])).ready
    assert store.status().ready


def test_a_shard_behind_the_applier_conflicts_alone(store):
    status = store.begin_generation({})
    store.commit(generation=status.generation, expected={}, progress={1: 3}, writes={})
    stale = ShardCommit(generation=status.generation, expected={1: 4}, progress={1: 5})
    current = ShardCommit(generation=status.generation, expected={1: 3}, progress={1: 4})
    with pytest.raises(ProgressConflict) as conflict:
        store.commit_shards(shards={0: current, 1: stale}, writes=PackedWrites([], []))
    assert conflict.value.shard == 1
    shards = store.status().shards
    assert shards[0].progress == {1: 4} and shards[1].progress == {1: 3}


def test_writes_for_a_shard_the_commit_does_not_name_are_refused(store):
    status = store.begin_generation({})
    addressing = store._addressing
    key, field = addressing.locate(EMAIL_FACT)
    other = (store.shard_of(key) + 1) % store.shard_count
    with pytest.raises(ValueError, match="does not name"):
        store.commit_shards(
            shards={other: ShardCommit(generation=status.generation, expected={}, progress={0: 1})},
            writes=PackedWrites.of({(key, field): FLAG_SET}),
        )


def test_redis_keys_and_fields_hold_no_personal_data(settings, redis_client):
    store = RedisStateStore(client=redis_client, addressing=FactAddressing(settings.state))
    status = store.begin_generation({})
    store.commit(generation=status.generation, expected={}, progress={0: 1}, writes={EMAIL_FACT: FLAG_SET, PHONE_FACT: "in"})
    keys = list(redis_client.scan_iter(match=f"{settings.state.key_prefix}:*"))
    assert len(keys) >= 2
    for key in keys:
        blob = key + b"".join(redis_client.hkeys(key)) if redis_client.type(key) == b"hash" else key
        assert b"jane" not in blob and b"example" not in blob and b"5550123" not in blob and b"org-1" not in blob


def test_one_batch_read_is_one_round_trip(settings, redis_client):
    store = RedisStateStore(client=redis_client, addressing=FactAddressing(settings.state))
    facts = [FactKey("org-1", FactKind.EMAIL_OPT_OUT_USER, (f"user{i}@example.com", "u1")) for i in range(300)]
    addressing = FactAddressing(settings.state)
    groups = addressing.group(dict.fromkeys(facts))
    keys, fields = list(groups), [b"".join(wanted) for _, wanted in groups.values()]
    shards = {addressing.shard_of(key) for key in keys}
    store.read_scripted(keys, fields, len(facts))  # loads the script

    def calls(stats, name):
        return stats.get(f"cmdstat_{name}", {}).get("calls", 0)

    before = redis_client.info("commandstats")
    store.read(facts)
    after = redis_client.info("commandstats")
    # The core's read: one MULTI/EXEC, written at once and answered as one stream of replies.
    assert calls(after, "exec") - calls(before, "exec") == 1
    assert calls(after, "hgetall") - calls(before, "hgetall") == len(shards)  # each shard's meta
    assert calls(after, "hmget") - calls(before, "hmget") == len(keys)
    assert calls(after, "evalsha") == calls(before, "evalsha")

    before = redis_client.info("commandstats")
    store.read_scripted(keys, fields, len(facts))
    after = redis_client.info("commandstats")
    # A cluster's read: one script call per shard, all in one pipeline.
    assert calls(after, "evalsha") - calls(before, "evalsha") == len(shards)
    assert calls(after, "exec") == calls(before, "exec")


def test_a_store_written_with_another_secret_is_refused(settings, redis_client):
    writer = RedisStateStore(client=redis_client, addressing=FactAddressing(settings.state))
    writer.begin_generation({})
    other = StateSettings(key_prefix=settings.state.key_prefix, hash_secret="another-secret")
    reader = RedisStateStore(client=redis_client, addressing=FactAddressing(other))
    with pytest.raises(ConfigurationError, match="HASH_SECRET"):
        reader.read([EMAIL_FACT])


def test_a_store_split_into_another_number_of_shards_is_refused(settings, redis_client):
    RedisStateStore(client=redis_client, addressing=FactAddressing(settings.state)).begin_generation({})
    other = StateSettings(key_prefix=settings.state.key_prefix, shards=8)
    with pytest.raises(ConfigurationError, match="SENDGATE_STATE__SHARDS"):
        RedisStateStore(client=redis_client, addressing=FactAddressing(other)).status()


def test_a_redis_that_evicts_keys_is_refused(settings, redis_client):
    store = RedisStateStore(client=redis_client, addressing=FactAddressing(settings.state))
    store.check()
    original = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(ConfigurationError, match="noeviction"):
            store.check()
    finally:
        redis_client.config_set("maxmemory-policy", original)


def test_an_unreachable_redis_is_a_retryable_state_error(settings):
    unreachable = RedisSettings(url="redis://127.0.0.1:1/0", connect_timeout_seconds=0.2)
    store = RedisStateStore.from_settings(unreachable, settings.state)
    with pytest.raises(StateUnavailable):
        store.read([EMAIL_FACT])
    with pytest.raises(StateUnavailable):
        store.check()


def test_stored_facts_cost_little_memory(settings, redis_client):
    store = RedisStateStore(
        client=redis_client, addressing=FactAddressing(StateSettings(key_prefix=settings.state.key_prefix, buckets_per_org=64))
    )
    status = store.begin_generation({})
    count = 5000
    writes = {FactKey("org-m", FactKind.EMAIL_OPT_OUT_ORGANIZATION, (f"person{i}@example.com",)): FLAG_SET for i in range(count)}
    before = redis_client.info("memory")["used_memory"]
    store.commit(generation=status.generation, expected={}, progress={0: 1}, writes=writes)
    per_fact = (redis_client.info("memory")["used_memory"] - before) / count
    assert per_fact <= 120, per_fact


def test_a_store_of_an_older_layout_waits_for_its_rebuild_and_a_newer_one_is_refused(settings, redis_client):
    from worker.errors import RetryableError
    from worker.state.errors import IncompatibleLayout, OlderLayout

    store = RedisStateStore(client=redis_client, addressing=FactAddressing(settings.state))
    legacy = FactAddressing(settings.state).legacy_meta_key  # layouts 1-3 kept one meta hash
    redis_client.hset(legacy, mapping={"generation": "g", "layout": "3"})
    with pytest.raises(OlderLayout, match="rebuilds it") as older:
        store.status()
    assert isinstance(older.value, RetryableError), "a gate upgraded first fails closed and waits"
    redis_client.delete(legacy)
    store.begin_generation({})
    meta = FactAddressing(settings.state).meta_keys[0]
    redis_client.hset(meta, "layout", "99")
    with pytest.raises(IncompatibleLayout, match="newer sendgate"):
        store.status()


def test_all_facts_of_one_address_share_a_hash_and_qualifiers_are_digested(settings):
    addressing = FactAddressing(settings.state)
    email = "jane.doe@example.com"
    facts = [
        FactKey("org-1", FactKind.EMAIL_OPT_OUT_ORGANIZATION, (email,)),
        FactKey("org-1", FactKind.EMAIL_OPT_OUT_USER, (email, "user-1")),
        FactKey("org-1", FactKind.EMAIL_OPT_OUT_USER, (email, "user-2")),
        FactKey("org-1", FactKind.EMAIL_OPT_OUT_DOMAIN, (email, "lender.example")),
    ]
    located = addressing.locate_all(facts)
    assert len({key for key, _ in located}) == 1
    assert len({field for _, field in located}) == 4
    assert all(b"user" not in field and b"lender" not in field for _, field in located)
    assert addressing.locate(FactKey("org-2", FactKind.EMAIL_OPT_OUT_ORGANIZATION, (email,))) != located[0]


def test_every_master_of_a_cluster_is_checked_for_eviction(settings, cluster_settings):
    store = RedisStateStore(client=connect(cluster_settings.redis), addressing=FactAddressing(settings.state))
    client = store.client
    try:
        store.check()
        master = client.get_primaries()[-1]  # type: ignore[union-attr]
        client.config_set("maxmemory-policy", "allkeys-lru", target_nodes=master)  # type: ignore[call-arg]
        try:
            with pytest.raises(ConfigurationError, match="noeviction"):
                store.check()
        finally:
            client.config_set("maxmemory-policy", "noeviction", target_nodes=master)  # type: ignore[call-arg]
    finally:
        store.close()


def test_scripts_flushed_from_the_server_are_loaded_again(store):
    if isinstance(store, MemoryStateStore):
        return  # no scripts
    status = store.begin_generation({})
    store.commit(generation=status.generation, expected={}, progress={0: 1}, writes={EMAIL_FACT: FLAG_SET})
    store.client.script_flush()  # a failover or a restart forgets them (a cluster client flushes every master)
    assert store.read([EMAIL_FACT]).facts[EMAIL_FACT] == FLAG_SET
    store.client.script_flush()
    assert store.commit(generation=status.generation, expected={0: 1}, progress={0: 2}, writes={}).progress == {0: 2}


def test_an_unreachable_cluster_is_a_retryable_state_error_not_a_crash_at_start(settings):
    unreachable = RedisSettings(url="redis://127.0.0.1:1/0", cluster=True, connect_timeout_seconds=0.2)
    store = RedisStateStore.from_settings(unreachable, settings.state)  # no I/O yet
    with pytest.raises(StateUnavailable):
        store.read([EMAIL_FACT])
    with pytest.raises(StateUnavailable):
        store.check()


def test_the_cores_packed_read_answers_as_the_stores_own_calls_and_reloads_a_flushed_script(store, settings):
    if isinstance(store, MemoryStateStore):
        return  # the core reads Redis only
    codec = AvroCodec.from_settings(settings)
    request = {
        "message_id": "m1", "org_id": "org-1", "user_id": "u1", "contact_id": "c1", "channel": "EMAIL",
        "category": "MARKETING", "to": "Jane.Doe@example.com", "from": "agent@lender.example", "requested_at": 1,
        "campaign_id": None, "payload": None, "attributes": {},
    }  # fmt: skip
    value = codec.encode("SendRequest", request)
    keys = DecisionPolicy().prepare(codec.decode_send_head(value)).keys
    held = [key for key in keys if key.kind in (FactKind.EMAIL_OPT_OUT_ORGANIZATION, FactKind.DO_NOT_CONTACT)]
    status = store.begin_generation({})
    store.commit(generation=status.generation, expected={}, progress={0: 1}, writes=dict.fromkeys(held, FLAG_SET))
    batch = build_core(settings, codec).prepare([value])

    expected = store.read_scripted(batch.keys, batch.fields, batch.fact_count)
    assert len(expected.found) == 2 * len(held)  # (position, value) of each fact held
    assert store.read_prepared(batch) == expected
    store.client.script_flush()  # a restarted Redis forgets the script: loaded, then the batch read again
    assert store.read_prepared(batch) == expected
    assert batch.decide(expected.found, 2, "gen=g").suppressed


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_a_read_sees_every_change_of_the_meta_though_unchanged_meta_is_parsed_once(kind, request, settings):
    if kind == "redis":
        store = RedisStateStore(client=request.getfixturevalue("redis_client"), addressing=FactAddressing(settings.state))
    else:
        cluster = connect(request.getfixturevalue("cluster_settings").redis)
        store = RedisStateStore(client=cluster, addressing=FactAddressing(settings.state))
        request.addfinalizer(store.close)
    status = store.begin_generation({0: 2})
    store.commit(generation=status.generation, expected={}, progress={0: 1}, writes={EMAIL_FACT: FLAG_SET})
    first = store.read([EMAIL_FACT, PHONE_FACT]).status
    assert (first.ready, first.progress[0]) == (False, 1)
    # Nothing changed: the same status object, the meta hashes not parsed again.
    assert store.read([EMAIL_FACT, PHONE_FACT]).status is first

    store.commit(generation=status.generation, expected={0: 1}, progress={0: 2}, writes={})
    advanced = store.read([EMAIL_FACT, PHONE_FACT]).status
    assert (advanced.ready, advanced.progress[0]) == (True, 2)  # progress and readiness as stored now

    store.clear()  # emptied (FLUSHALL): no generation, whatever was read before
    assert store.read([EMAIL_FACT, PHONE_FACT]).status.generation is None
