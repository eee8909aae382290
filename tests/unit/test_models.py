"""Record models: Avro dict forms and the subject keys of SPEC §4."""

from __future__ import annotations

from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType as T,
    PreferenceSource,
    SendRequest,
    UnsubscribeScope,
    UserOptOutScope,
)


def event(type_: T, **fields) -> PreferenceEvent:
    return PreferenceEvent(event_id="e1", org_id="org", occurred_at=1, source=PreferenceSource.API, type=type_, **fields)


def test_subject_keys_follow_spec_and_normalise_addresses():
    assert event(T.SMS_OPT_IN, phone="(415) 555-0100").kafka_key() == event(T.SMS_OPT_OUT, phone="+14155550100").kafka_key() == "org:+14155550100"
    assert event(T.EMAIL_OPT_OUT_USER, email=" Jane@Example.COM ", user_id="u").kafka_key() == "org:jane@example.com"
    assert event(T.CONTACT_SILENCED, contact_id="c-1").kafka_key() == "org:c-1"
    assert event(T.ORG_SETTINGS_CHANGED, settings=OrgSettings()).kafka_key() == "org"
    assert event(T.SMS_OPT_IN, phone="not a phone").kafka_key() == "org:not a phone"
    assert event(T.EMAIL_OPT_OUT_ORGANIZATION).kafka_key() == "org:"


def test_records_round_trip_through_their_dict_forms():
    request = SendRequest("m", "org", "u", "c", Channel.SMS, Category.TRANSACTIONAL, "+14155550100", "12345", 7, None, b"p", {"a": "b"})
    assert SendRequest.from_record(request.to_record()) == request
    settings = OrgSettings(UnsubscribeScope.ORGANIZATION, UserOptOutScope.ORGANIZATION)
    changed = event(T.ORG_SETTINGS_CHANGED, settings=settings)
    assert PreferenceEvent.from_record(changed.to_record()) == changed
