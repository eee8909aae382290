"""Record models: Avro dict forms; the subject keys of SPEC §4 (policy.event_keys)."""

from __future__ import annotations

from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceSource,
    SendRequest,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.models import (
    PreferenceEventType as T,
)
from worker.policy.event_keys import kafka_key


def event(type_: T, **fields) -> PreferenceEvent:
    return PreferenceEvent(event_id="e1", org_id="org", occurred_at=1, source=PreferenceSource.API, type=type_, **fields)


def test_subject_keys_follow_spec_and_normalise_addresses():
    assert (
        kafka_key(event(T.SMS_OPT_IN, phone="(415) 555-0100"))
        == kafka_key(event(T.SMS_OPT_OUT, phone="+14155550100"))
        == "org:+14155550100"
    )
    assert kafka_key(event(T.EMAIL_OPT_OUT_USER, email=" Jane@Example.COM ", user_id="u")) == "org:jane@example.com"
    assert kafka_key(event(T.CONTACT_SILENCED, contact_id="c-1")) == "org:c-1"
    assert kafka_key(event(T.ORG_SETTINGS_CHANGED, settings=OrgSettings())) == "org"
    assert kafka_key(event(T.SMS_OPT_IN, phone="not a phone")) == "org:not a phone"
    assert kafka_key(event(T.EMAIL_OPT_OUT_ORGANIZATION)) == "org:"


def test_records_round_trip_through_their_dict_forms():
    request = SendRequest("m", "org", "u", "c", Channel.SMS, Category.TRANSACTIONAL, "+14155550100", "12345", 7, None, b"p", {"a": "b"})
    assert SendRequest.from_record(request.to_record()) == request
    settings = OrgSettings(UnsubscribeScope.ORGANIZATION, UserOptOutScope.ORGANIZATION)
    changed = event(T.ORG_SETTINGS_CHANGED, settings=settings)
    assert PreferenceEvent.from_record(changed.to_record()) == changed
