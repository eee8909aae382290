"""Builders for policy tests: requests, events, and an in-memory fact map driven by the rules."""

from __future__ import annotations

import itertools
from typing import Any

from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    PreferenceSource,
    RejectionReason,
    SendRequest,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.policy.decision import Decision, DecisionPolicy
from worker.policy.events import PreferenceRules, apply_events
from worker.policy.facts import FactKey

ORG = "org-1"
EMAIL = "jane.doe@example.com"
PHONE = "+12025550101"
SENDER = "loan.officer@acme.com"

_ids = itertools.count(1)


def email_request(
    *,
    to: str = EMAIL,
    from_: str = SENDER,
    category: Category = Category.MARKETING,
    org: str = ORG,
    user: str = "u1",
    contact: str = "c1",
) -> SendRequest:
    return SendRequest(
        message_id=f"m{next(_ids)}",
        org_id=org,
        user_id=user,
        contact_id=contact,
        channel=Channel.EMAIL,
        category=category,
        to=to,
        from_=from_,
        requested_at=1_700_000_000_000,
    )


def sms_request(
    *,
    to: str = PHONE,
    from_: str = "55555",
    category: Category = Category.MARKETING,
    org: str = ORG,
    user: str = "u1",
    contact: str = "c1",
) -> SendRequest:
    return SendRequest(
        message_id=f"m{next(_ids)}",
        org_id=org,
        user_id=user,
        contact_id=contact,
        channel=Channel.SMS,
        category=category,
        to=to,
        from_=from_,
        requested_at=1_700_000_000_000,
    )


def request(channel: Channel, category: Category, **kwargs: Any) -> SendRequest:
    return (email_request if channel is Channel.EMAIL else sms_request)(
        category=category, **kwargs
    )


def event(
    type_: PreferenceEventType,
    *,
    org: str = ORG,
    at: int = 1_000,
    event_id: str | None = None,
    source: PreferenceSource = PreferenceSource.API,
    **fields: Any,
) -> PreferenceEvent:
    return PreferenceEvent(
        event_id=event_id if event_id is not None else f"e{next(_ids):06d}",
        org_id=org,
        occurred_at=at,
        source=source,
        type=type_,
        **fields,
    )


def org_settings(
    unsubscribe: UnsubscribeScope = UnsubscribeScope.DOMAIN,
    user: UserOptOutScope = UserOptOutScope.USER,
) -> OrgSettings:
    return OrgSettings(unsubscribe_scope=unsubscribe, user_opt_out_scope=user)


class PolicyState:
    """A dict of facts that preference events are applied to, and requests decided against."""

    def __init__(self, *, region: str = "US") -> None:
        self.facts: dict[FactKey, str] = {}
        self.rules = PreferenceRules(default_phone_region=region)
        self.policy = DecisionPolicy(default_phone_region=region)

    def apply(
        self, *events: PreferenceEvent
    ) -> list[tuple[PreferenceEvent, RejectionReason, str]]:
        writes, rejections = apply_events(self.rules, events, self.facts)
        self.facts.update(writes)
        return rejections

    def decide(self, req: SendRequest) -> Decision:
        prepared = self.policy.prepare(req)
        # Hand over only the facts the request named, as the store does.
        return self.policy.decide(
            prepared, {k: self.facts.get(k) for k in prepared.keys}
        )
