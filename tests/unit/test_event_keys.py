"""The Kafka key a producer gives a preference event (SPEC §4): its normalised subject."""

from __future__ import annotations

from worker.models import OrgSettings, PreferenceEvent, PreferenceSource
from worker.models import PreferenceEventType as T
from worker.policy.event_keys import kafka_key


def event(type_: T, **fields) -> PreferenceEvent:
    return PreferenceEvent(event_id="e1", org_id="org", occurred_at=1, source=PreferenceSource.API, type=type_, **fields)


def test_subject_keys_follow_spec_and_normalise_addresses():
    spelled, e164 = event(T.SMS_OPT_IN, phone="(415) 555-0100"), event(T.SMS_OPT_OUT, phone="+14155550100")
    assert kafka_key(spelled) == kafka_key(e164) == "org:+14155550100"
    assert kafka_key(event(T.EMAIL_OPT_OUT_USER, email=" Jane@Example.COM ", user_id="u")) == "org:jane@example.com"
    assert kafka_key(event(T.CONTACT_SILENCED, contact_id="c-1")) == "org:c-1"
    assert kafka_key(event(T.ORG_SETTINGS_CHANGED, settings=OrgSettings())) == "org"
    assert kafka_key(event(T.SMS_OPT_IN, phone="not a phone")) == "org:not a phone"
    assert kafka_key(event(T.EMAIL_OPT_OUT_ORGANIZATION)) == "org:"


def test_phone_numbers_are_keyed_in_the_default_region_given():
    national = event(T.SMS_OPT_IN, phone="020 7946 0018")
    assert kafka_key(national, "GB") == "org:+442079460018"
    assert kafka_key(national) == "org:020 7946 0018"  # not a US number: used as written
