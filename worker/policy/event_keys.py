"""The Kafka key a producer gives a preference event (SPEC §4).

It lives with the policy, not on the record, because it normalises addresses
the way the applier does; the records of :mod:`worker.models` import nothing
of the policy.
"""

from __future__ import annotations

from worker.models import PreferenceEvent, PreferenceEventType
from worker.policy.addresses import normalize_email, normalize_phone


def kafka_key(event: PreferenceEvent, default_phone_region: str = "US") -> str:
    """The subject key of SPEC §4 that keeps one subject's events in order.

    Addresses are normalised first (phone numbers with the applier's default
    region), so the applier counts the event as keyed correctly; an address
    that cannot be normalised is used as written.
    """
    if event.type is PreferenceEventType.ORG_SETTINGS_CHANGED:
        return event.org_id
    if event.type.name.startswith("CONTACT_"):
        return f"{event.org_id}:{event.contact_id or ''}"
    if event.type.name.startswith("SMS_"):
        raw = event.phone or ""
        return f"{event.org_id}:{normalize_phone(raw, default_phone_region) or raw}"
    raw = event.email or ""
    return f"{event.org_id}:{normalize_email(raw) or raw}"
