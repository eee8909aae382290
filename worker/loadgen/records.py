"""Records as the world's systems write them: addresses as spelled, send requests, events built to be rejected."""

from __future__ import annotations

import json
import random

from worker.loadgen.world import FIRST_NAMES, LAST_NAMES, Contact
from worker.models import (
    Category,
    Channel,
    PreferenceEventType,
    PreferenceSource,
    RejectionReason,
    SendRequest,
)

T = PreferenceEventType
Src = PreferenceSource

# The rejections an invalid generated event is built to get (UNDECODABLE needs
# bytes that are not a PreferenceEvent at all, so the generator cannot make it).
INVALID_KINDS = (
    RejectionReason.MISSING_FIELD,
    RejectionReason.INVALID_ADDRESS,
    RejectionReason.SOURCE_NOT_ALLOWED,
    RejectionReason.SMS_NOT_OPTED_IN,
    RejectionReason.IRREVERSIBLE,
)
INVALID_SUFFIX = "-invalid"  # ends the event_id of every event built to be rejected
INVALID_EMAILS = ("not-an-address", "jane@", "@example.com", "a@b@c.example", "john doe@example.com")
INVALID_PHONES = ("12345", "+1 555", "phone", "0000")


def raw_email(email: str, h: int) -> str:
    """How a system might spell the address: mostly as stored, sometimes in capitals or padded."""
    variant = h % 40
    if variant == 0:
        return email.upper()
    if variant == 1:
        return f" {email} "
    return email


def raw_phone(phone: str, h: int) -> str:
    """E.164 mostly; sometimes the national US form the default region resolves."""
    if h % 10 == 0 and phone.startswith("+1"):
        return f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"
    return phone


class SendFactory:
    """Builds send requests the way campaign engines write them: payload, attributes, campaign."""

    def __init__(self, *, seed: int) -> None:
        rng = random.Random(f"sendgate-payloads-{seed}")
        # A few fixed payloads: realistic sizes without paying for random bytes per request.
        self._payloads = [
            json.dumps(
                {"first_name": rng.choice(FIRST_NAMES).title(), "loan_amount": str(rng.randrange(80, 900) * 1000),
                 "rate": f"{rng.uniform(4, 8):.3f}", "officer": rng.choice(LAST_NAMES).title(),
                 "notes": "x" * rng.randrange(0, 120)},
                separators=(",", ":"),
            ).encode()
            for _ in range(32)
        ]
        self._attributes = [{"template": f"tpl-{k}", "locale": ("en-US", "es-US")[k % 2]} for k in range(16)]

    def build(
        self, *, message_id: str, contact: Contact, channel: Channel, category: Category, user: str, sender_domain: str,
        to: str, requested_at: int, h: int, from_: str | None = None,
    ) -> SendRequest:
        org = contact.org
        if from_ is None:
            from_ = f"{user}@{sender_domain}" if channel is Channel.EMAIL else org.sms_sender
        return SendRequest(
            message_id=message_id,
            org_id=org.org_id,
            user_id=user,
            contact_id=contact.contact_id,
            channel=channel,
            category=category,
            to=to,
            from_=from_,
            requested_at=requested_at,
            campaign_id=f"cmp-{org.index}-{h % 8}",
            payload=self._payloads[(h >> 3) % len(self._payloads)],
            attributes=self._attributes[(h >> 8) % len(self._attributes)],
        )
