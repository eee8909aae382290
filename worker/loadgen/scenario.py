"""A scripted scenario touching every reason of SPEC §3: used by ``make demo`` and the end-to-end test.

Each send carries the outcome the rules require, so the demo can show, and
the test can check, that what the gate decided is what SPEC says.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from worker.models import (
    Category,
    Channel,
    PreferenceEvent,
    PreferenceSource,
    SendRequest,
)
from worker.models import (
    PreferenceEventType as T,
)
from worker.models import (
    SuppressionReason as R,
)

SENDER = "agent@lender.example"
DBA_SENDER = "agent@other-dba.example"


@dataclass(frozen=True)
class ScriptedSend:
    request: SendRequest
    expected_reasons: tuple[R, ...]  # empty: allowed
    story: str

    @property
    def expected_allowed(self) -> bool:
        return not self.expected_reasons


@dataclass(frozen=True)
class Scenario:
    org_id: str
    events: list[PreferenceEvent]
    sends: list[ScriptedSend]


def build_scenario(*, run_id: str | None = None, base_time_ms: int) -> Scenario:
    """Events and sends for one fresh organization (``run_id`` keeps re-runs apart)."""
    run_id = run_id or uuid.uuid4().hex[:8]
    org = f"demo-{run_id}"
    at = base_time_ms

    def event(
        type_: T, source: PreferenceSource = PreferenceSource.PREFERENCE_CENTER, *, earlier_by_ms: int = 0, **fields: object
    ) -> PreferenceEvent:
        nonlocal at
        at += 1
        return PreferenceEvent(
            event_id=f"{org}-ev-{at}", org_id=org, occurred_at=at - earlier_by_ms, source=source, type=type_, **fields  # type: ignore[arg-type]
        )

    events = [
        event(T.EMAIL_OPT_OUT_ORGANIZATION, email="org-out@example.com"),
        event(T.EMAIL_OPT_OUT_DOMAIN, email="domain-out@example.com", domain="lender.example"),
        event(T.EMAIL_OPT_OUT_USER, email="user-out@example.com", user_id="user-1"),
        event(T.EMAIL_UNSUBSCRIBE, email="unsubscribed@example.com", domain="lender.example"),
        event(T.CONTACT_DO_NOT_CONTACT, source=PreferenceSource.USER, contact_id="contact-dnc",
              email="dnc@example.com", phone="+14155550101"),
        event(T.CONTACT_SILENCED, source=PreferenceSource.USER, contact_id="contact-silenced"),
        event(T.CONTACT_OK_TO_EMAIL_SET, source=PreferenceSource.API, contact_id="contact-no-email", ok_to_email=False),
        event(T.SMS_OPT_IN, source=PreferenceSource.CONTACT, phone="+14155550102"),
        event(T.SMS_OPT_IN, source=PreferenceSource.CONTACT, phone="+14155550103"),
        event(T.SMS_OPT_OUT, source=PreferenceSource.CONTACT, phone="+14155550103"),
        # SMS consent in event time: a STOP applied before an earlier opt-in (here spelled
        # nationally) is rejected as SMS_NOT_OPTED_IN but remembered, and the opt-in then
        # leaves the number opted out.
        event(T.SMS_OPT_OUT, source=PreferenceSource.CONTACT, phone="+14155550104"),
        event(T.SMS_OPT_IN, source=PreferenceSource.CONTACT, phone="(415) 555-0104", earlier_by_ms=60_000),
        # Rejected on purpose: ok-to-email may only come from API or IMPORT.
        event(T.CONTACT_OK_TO_EMAIL_SET, source=PreferenceSource.USER, contact_id="contact-1", ok_to_email=False),
    ]
    sent_at = at + 1_000
    count = 0

    def send(story: str, expected: tuple[R, ...], *, to: str, channel: Channel = Channel.EMAIL,
             category: Category = Category.MARKETING, contact: str = "contact-1", user: str = "user-1",
             sender: str = SENDER) -> ScriptedSend:
        nonlocal count
        count += 1
        request = SendRequest(
            message_id=f"{org}-msg-{count:02d}", org_id=org, user_id=user, contact_id=contact, channel=channel,
            category=category, to=to, from_=sender if channel is Channel.EMAIL else "+14155550000",
            requested_at=sent_at, campaign_id=f"{org}-campaign",
        )
        return ScriptedSend(request, expected, story)

    sends = [
        send("no preference recorded", (), to="fine@example.com"),
        send("unparsable address", (R.INVALID_ADDRESS,), to="not-an-address"),
        send("contact on the do-not-contact list", (R.DO_NOT_CONTACT, R.EMAIL_OPT_OUT_ORGANIZATION), to="dnc@example.com",
             contact="contact-dnc"),
        send("silenced contact", (R.SILENCED,), to="silenced@example.com", contact="contact-silenced"),
        send("organization-level opt-out", (R.EMAIL_OPT_OUT_ORGANIZATION,), to="org-out@example.com"),
        send("transactional email ignores the opt-out", (), to="org-out@example.com", category=Category.TRANSACTIONAL),
        send("domain-level opt-out", (R.EMAIL_OPT_OUT_DOMAIN,), to="domain-out@example.com"),
        send("another sender domain (DBA) may still send", (), to="domain-out@example.com", sender=DBA_SENDER),
        send("preference-center unsubscribe (DOMAIN scope)", (R.EMAIL_OPT_OUT_DOMAIN,), to="unsubscribed@example.com"),
        send("user-level opt-out", (R.EMAIL_OPT_OUT_USER,), to="user-out@example.com"),
        send("other users of the organization may still send", (), to="user-out@example.com", user="user-2"),
        send("ok-to-email = false blocks even transactional", (R.OK_TO_EMAIL_FALSE,), to="noemail@example.com",
             contact="contact-no-email", category=Category.TRANSACTIONAL),
        send("SMS opted in", (), to="+14155550102", channel=Channel.SMS),
        send("SMS opted out", (R.SMS_OPT_OUT,), to="+14155550103", channel=Channel.SMS),
        send("SMS never opted in", (R.SMS_NOT_OPTED_IN,), to="+14155550199", channel=Channel.SMS),
        send("SMS STOP applied before an earlier opt-in still holds", (R.SMS_OPT_OUT,), to="+14155550104",
             channel=Channel.SMS),
        send("duplicate of a do-not-contact: transactional email allowed", (), to="dnc@example.com",
             contact="contact-duplicate", category=Category.TRANSACTIONAL),
        send("duplicate of a do-not-contact: marketing email blocked", (R.EMAIL_OPT_OUT_ORGANIZATION,),
             to="dnc@example.com", contact="contact-duplicate"),
        send("duplicate of a do-not-contact: SMS blocked", (R.SMS_OPT_OUT,), to="+14155550101",
             channel=Channel.SMS, contact="contact-duplicate"),
    ]
    return Scenario(org_id=org, events=events, sends=sends)
