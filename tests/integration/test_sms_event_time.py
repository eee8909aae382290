"""SPEC §4 through real Kafka: SMS consent in event time, miskeyed events, rejections after a rebuild."""

from __future__ import annotations

from confluent_kafka import Producer

from tests.integration.support import preference_event, read_committed, running_applier, send_request, wait_until
from worker.assembly import Runtime
from worker.codec import AvroCodec
from worker.config import Settings
from worker.models import Channel, PreferenceEvent, SuppressionReason
from worker.models import PreferenceEventType as T
from worker.policy.decision import DecisionPolicy
from worker.policy.event_keys import kafka_key
from worker.state.redis_store import RedisStateStore


def _produce_on(settings: Settings, partition: int, key: str, event: PreferenceEvent) -> None:
    producer = Producer(settings.kafka.common_config())
    value = AvroCodec.from_settings(settings).encode("PreferenceEvent", event.to_record())
    producer.produce(settings.topics.preferences, key=key.encode(), value=value, partition=partition)
    assert producer.flush(15) == 0


def _applied_everything(applier, settings) -> bool:  # type: ignore[no-untyped-def]
    ends = Runtime.create(settings).preference_end_offsets().read()
    return applier.progress.status.ready and applier.progress.status.covers(ends)


def _decide_sms(settings: Settings, to: str):  # type: ignore[no-untyped-def]
    policy = DecisionPolicy()
    prepared = policy.prepare(send_request(channel=Channel.SMS, to=to, contact_id="c-sms"))
    store = RedisStateStore.from_settings(settings.redis, settings.state)
    return policy.decide(prepared, store.read(prepared.keys).facts)


def _miskeyed(runtime_metrics, type_: T) -> float:  # type: ignore[no-untyped-def]
    value = runtime_metrics.registry.get_sample_value("sendgate_preference_events_miskeyed_total", {"type": type_.value})
    return value or 0.0


def test_an_opt_in_and_opt_out_keyed_by_two_spellings_on_two_partitions_suppress_in_either_order(kafka_topics):
    """Issue 15's producer: opt-in keyed ``org:(650) 253-0001``, opt-out keyed ``org:+16502530001``."""
    settings = kafka_topics
    t0 = 1_700_000_000_000
    orders = {
        # number: which event the applier sees first
        "+16502530001": "opt-in first",
        "+16502530002": "opt-out first",
    }
    with running_applier(settings) as applier:
        for number, order in orders.items():
            national = f"(650) 253-000{number[-1]}"
            opt_in = preference_event(T.SMS_OPT_IN, phone=national, occurred_at=t0)
            opt_out = preference_event(T.SMS_OPT_OUT, phone=number, occurred_at=t0 + 1_000)
            steps = [(0, f"{opt_in.org_id}:{national}", opt_in), (1, f"{opt_out.org_id}:{number}", opt_out)]
            if order == "opt-out first":
                steps.reverse()
            for partition, key, event in steps:
                _produce_on(settings, partition, key, event)
                # Applied before the next is produced: the order of application is the one named.
                wait_until(lambda: _applied_everything(applier, settings), message=f"{number}: {order}")
        decisions = {number: _decide_sms(settings, number) for number in orders}
        rejected = read_committed(settings, settings.topics.rejected)
    for number, decision in decisions.items():
        assert decision.reasons == (SuppressionReason.SMS_OPT_OUT,), (orders[number], decision)
    # Applied opt-out first, it was rejected (no opt-in yet) but remembered; opt-in first, nothing was rejected.
    codec = AvroCodec.from_settings(settings)
    rejected_events = {codec.decode("RejectedPreferenceEvent", m.value())["event"]["phone"] for m in rejected}
    assert rejected_events == {"+16502530002"}
    # The two national spellings are miskeyed (SPEC §4 keys by E.164); the E.164 keys are not.
    assert _miskeyed(applier._metrics, T.SMS_OPT_IN) == 2
    assert _miskeyed(applier._metrics, T.SMS_OPT_OUT) == 0


def test_a_rebuild_does_not_republish_rejections_already_published(kafka_topics, redis_client):
    settings = kafka_topics
    t0 = 1_700_000_000_000
    events = [
        preference_event(T.SMS_OPT_OUT, phone="+16502530011", occurred_at=t0),  # SMS_NOT_OPTED_IN
        preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="not an address"),  # INVALID_ADDRESS
        preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="kept@example.com"),
    ]
    for event in events:
        _produce_on(settings, 0, kafka_key(event), event)
    with running_applier(settings) as first:
        wait_until(lambda: _applied_everything(first, settings), message="first build")
    assert len(read_committed(settings, settings.topics.rejected)) == 2

    RedisStateStore.from_settings(settings.redis, settings.state).clear()
    late = preference_event(T.SMS_OPT_OUT, phone="+16502530012", occurred_at=t0)  # rejected for the first time
    _produce_on(settings, 0, kafka_key(late), late)
    with running_applier(settings) as second:
        wait_until(lambda: _applied_everything(second, settings), message="rebuild")
    assert second.progress.rebuilds == 1
    rejected = read_committed(settings, settings.topics.rejected)
    codec = AvroCodec.from_settings(settings)
    ids = [codec.decode("RejectedPreferenceEvent", m.value())["event"]["event_id"] for m in rejected]
    assert sorted(ids) == sorted([events[0].event_id, events[1].event_id, late.event_id])
    # The rebuilt store holds the remembered opt-out all the same.
    assert _decide_sms(settings, "+16502530011").details == {"SMS_NOT_OPTED_IN": f"sms_consent=none opt-out@{t0}"}
