"""The preference applier against real Kafka and Redis."""

from __future__ import annotations

import redis

from tests.integration.support import (
    WorkerThread,
    preference_event,
    produce_events,
    produce_raw,
    read_committed,
    running_applier,
    send_request,
    wait_until,
)
from worker.assembly import Runtime, build_applier
from worker.codec import AvroCodec
from worker.config import RedisSettings
from worker.models import Channel, PreferenceSource, RejectionReason, SuppressionReason
from worker.models import PreferenceEventType as T
from worker.policy.decision import DecisionPolicy
from worker.policy.event_keys import kafka_key
from worker.state.redis_store import RedisStateStore


def decide(settings, request):
    policy = DecisionPolicy()
    prepared = policy.prepare(request)
    store = RedisStateStore.from_settings(settings.redis, settings.state)
    return policy.decide(prepared, store.read(prepared.keys).facts)


def applied_everything(applier, settings):
    ends = Runtime.create(settings).preference_end_offsets().read()
    return applier.progress.status.ready and applier.progress.status.covers(ends)


def test_events_produced_to_the_topic_end_in_redis(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(
        settings,
        codec,
        [
            preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="Jane@Example.com"),
            preference_event(T.SMS_OPT_IN, phone="+1 415 555 0100"),
            preference_event(T.CONTACT_SILENCED, contact_id="c-9"),
        ],
    )
    with running_applier(settings) as applier:
        wait_until(lambda: applied_everything(applier, settings), message="applier caught up")
    assert decide(settings, send_request(to="jane@example.com")).reasons == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)
    assert decide(settings, send_request(channel=Channel.SMS, to="(415) 555-0100", contact_id="c-2")).allowed
    assert SuppressionReason.SILENCED in decide(settings, send_request(to="bob@example.com", contact_id="c-9")).reasons


def test_invalid_events_end_in_the_rejected_topic_with_their_reason(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(
        settings,
        codec,
        [
            preference_event(T.EMAIL_OPT_OUT_USER, email="jane@example.com"),  # no user_id
            preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="not an address"),
            preference_event(T.CONTACT_OK_TO_EMAIL_SET, contact_id="c-1", ok_to_email=False, source=PreferenceSource.USER),
            preference_event(T.SMS_OPT_OUT, phone="+14155550199"),  # never opted in
        ],
    )
    produce_raw(settings, settings.topics.preferences, [(b"org-a:garbage", b"\x00\x00\x00\x00\x02garbage")])
    with running_applier(settings) as applier:
        wait_until(lambda: applied_everything(applier, settings), message="applier caught up")
    rejected = [codec.decode("RejectedPreferenceEvent", m.value()) for m in read_committed(settings, settings.topics.rejected)]
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == sorted(
        [
            RejectionReason.MISSING_FIELD,
            RejectionReason.INVALID_ADDRESS,
            RejectionReason.SOURCE_NOT_ALLOWED,
            RejectionReason.SMS_NOT_OPTED_IN,
            RejectionReason.UNDECODABLE,
        ]
    )
    undecodable = next(r for r in rejected if r["reason"] == "UNDECODABLE")
    assert undecodable["raw"] == b"\x00\x00\x00\x00\x02garbage" and undecodable["event"] is None
    assert all(r["detail"] for r in rejected)


def test_an_emptied_redis_is_detected_and_rebuilt(kafka_topics, services):
    settings = kafka_topics.model_copy(update={"redis": RedisSettings(url=services.redis_url.rsplit("/", 1)[0] + "/7")})
    client = redis.Redis.from_url(settings.redis.url)
    client.flushdb()
    codec = AvroCodec.from_settings(settings)
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email=f"p{i}@example.com") for i in range(50)])
    try:
        with running_applier(settings) as applier:
            wait_until(lambda: applied_everything(applier, settings), message="first build")
            generation = applier.progress.status.generation
            client.flushdb()
            wait_until(
                lambda: applier.progress.status.generation not in (None, generation) and applied_everything(applier, settings),
                message="rebuild after FLUSHDB",
            )
            assert applier.progress.rebuilds == 2
        assert decide(settings, send_request(to="p42@example.com")).reasons == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)
    finally:
        client.flushdb()


def test_a_restart_resumes_from_stored_progress(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(
        settings, codec, [preference_event(T.EMAIL_OPT_OUT_DOMAIN, email=f"a{i}@example.com", domain="lender.example") for i in range(30)]
    )
    with running_applier(settings) as first:
        wait_until(lambda: applied_everything(first, settings), message="first run")
    assert first.progress.events_applied == 30
    produce_events(settings, codec, [preference_event(T.CONTACT_SILENCED, contact_id=f"c{i}") for i in range(7)])
    runtime = Runtime.create(settings)
    second = build_applier(runtime)
    worker = WorkerThread(runtime, second.run)
    try:
        wait_until(lambda: applied_everything(second, settings), message="second run")
    finally:
        worker.stop()
    assert second.progress.events_applied == 7
    assert second.progress.rebuilds == 0


def test_progress_moves_past_transaction_markers_so_the_gate_barrier_is_reached(kafka_topics):
    """A transactional preference producer leaves commit markers; the barrier (last stable
    offset) lies past them, so the applier must record progress beyond the last event."""
    from confluent_kafka import Producer

    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    transactional = Producer({**settings.kafka.common_config(), "transactional.id": f"{settings.gate.instance_id}-prefs"})
    transactional.init_transactions(30)
    transactional.begin_transaction()
    event = preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="tx@example.com")
    transactional.produce(
        settings.topics.preferences, key=kafka_key(event).encode(), value=codec.encode("PreferenceEvent", event.to_record())
    )
    transactional.commit_transaction(30)
    ends = Runtime.create(settings).preference_end_offsets().read()
    assert sum(ends.values()) == 2  # the event and its commit marker
    with running_applier(settings) as applier:
        wait_until(lambda: applier.progress.status.covers(ends), message="progress past the commit marker")
    assert applier.progress.events_applied == 1


def test_a_store_of_an_older_layout_is_emptied_and_rebuilt(kafka_topics, redis_client):
    from worker.state.addressing import FactAddressing

    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="old@example.com")])
    with running_applier(settings) as first:
        wait_until(lambda: applied_everything(first, settings), message="first build")
    # What layout 3 left: one meta hash and facts under organization hash tags, no shard metas.
    for key in redis_client.scan_iter(match=f"{settings.state.key_prefix}:*"):
        redis_client.delete(key)
    legacy_fact = f"{settings.state.key_prefix}:{{0123456789}}:7"
    redis_client.hset(FactAddressing(settings.state).legacy_meta_key, mapping={"generation": "old", "layout": "3"})
    redis_client.hset(legacy_fact, "field", "1")
    with running_applier(settings) as second:
        wait_until(lambda: applied_everything(second, settings), message="rebuild of the old layout")
    assert second.progress.rebuilds == 1 and second.progress.events_applied == 1
    assert not redis_client.exists(legacy_fact, FactAddressing(settings.state).legacy_meta_key)
    assert decide(settings, send_request(to="old@example.com")).reasons == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)


def test_a_store_of_a_newer_layout_is_left_alone_by_an_older_applier(kafka_topics, redis_client):
    """A rolling upgrade: the applier not yet upgraded must not empty what the upgraded one built."""
    import pytest

    from worker.state.addressing import FactAddressing
    from worker.state.errors import IncompatibleLayout

    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="new@example.com")])
    with running_applier(settings) as first:
        wait_until(lambda: applied_everything(first, settings), message="first build")
    meta = FactAddressing(settings.state).meta_keys[0]
    redis_client.hset(meta, "layout", "99")
    keys_before = sorted(redis_client.scan_iter(match=f"{settings.state.key_prefix}*"))
    runtime = Runtime.create(settings)
    with pytest.raises(IncompatibleLayout, match="newer sendgate"):
        build_applier(runtime).run(until_ready=True)
    assert sorted(redis_client.scan_iter(match=f"{settings.state.key_prefix}*")) == keys_before
    assert redis_client.hget(meta, "layout") == b"99"
