"""The generator's streams over a world: preference events of every type, and send requests.

The event mix covers every type of SPEC §4 plus a few events built to be
rejected, the send mix EMAIL/SMS × MARKETING/TRANSACTIONAL with some invalid
addresses. Same arguments, same records.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator, Mapping
from typing import Any

from worker.loadgen.records import (
    INVALID_EMAILS,
    INVALID_KINDS,
    INVALID_PHONES,
    INVALID_SUFFIX,
    SendFactory,
    Src,
    T,
    raw_email,
    raw_phone,
)
from worker.loadgen.world import Contact, World
from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    RejectionReason,
    SendRequest,
    UnsubscribeScope,
    UserOptOutScope,
)

# Shares of the valid preference events (SPEC §4: every type appears).
EVENT_MIX: Mapping[PreferenceEventType, float] = {
    T.EMAIL_OPT_OUT_USER: 0.12,
    T.EMAIL_OPT_OUT_ORGANIZATION: 0.16,
    T.EMAIL_OPT_OUT_DOMAIN: 0.08,
    T.EMAIL_UNSUBSCRIBE: 0.16,
    T.SMS_OPT_IN: 0.18,
    T.SMS_OPT_OUT: 0.08,
    T.CONTACT_SILENCED: 0.06,
    T.CONTACT_UNSILENCED: 0.03,
    T.CONTACT_DO_NOT_CONTACT: 0.02,
    T.CONTACT_OK_TO_EMAIL_SET: 0.08,
    T.ORG_SETTINGS_CHANGED: 0.03,
}

_POOL_CAP = 100_000


class _Pool:
    """A bounded bag of (org_id, phone) with random take: the numbers opted in or out so far."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._items: list[tuple[str, str]] = []

    def add(self, item: tuple[str, str]) -> None:
        if len(self._items) < _POOL_CAP:
            self._items.append(item)
        else:
            self._items[self._rng.randrange(_POOL_CAP)] = item

    def take(self) -> tuple[str, str] | None:
        if not self._items:
            return None
        i = self._rng.randrange(len(self._items))
        self._items[i], self._items[-1] = self._items[-1], self._items[i]
        return self._items.pop()

    def pick(self) -> tuple[str, str] | None:
        return self._items[self._rng.randrange(len(self._items))] if self._items else None


def generate_events(
    world: World,
    count: int,
    *,
    seed: int,
    base_time_ms: int,
    invalid_share: float = 0.02,
    mix: Mapping[PreferenceEventType, float] = EVENT_MIX,
) -> Iterator[PreferenceEvent]:
    """``count`` preference events of every type (SPEC §4), a share of them built to be rejected.

    SMS opt-outs are drawn from numbers opted in earlier in the stream, as
    SPEC §8 requires. SMS events always spell the number in E.164, the form
    of SPEC §4's key, so none is counted as miskeyed whatever the applier's
    default region. Email
    events sometimes carry capitals or spaces (their facts do not depend on
    order). Events built to be rejected have ids ending in ``-invalid``;
    ``occurred_at`` grows by 1 ms per event from ``base_time_ms``. Same
    arguments, same events.
    """
    rng = random.Random(f"sendgate-events-{seed}")
    opted_in, opted_out = _Pool(rng), _Pool(rng)
    kinds = list(mix)
    cumulative = list(itertools.accumulate(mix.values()))
    for i in range(count):
        base: dict[str, Any] = {"event_id": f"ev-{seed}-{i}", "occurred_at": base_time_ms + i}
        if rng.random() < invalid_share:
            base["event_id"] += INVALID_SUFFIX
            yield _invalid_event(world, rng, base, opted_out)
            continue
        kind = kinds[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
        yield _valid_event(world, rng, base, kind, opted_in, opted_out)


def _contact_with(world: World, rng: random.Random, field: str) -> Contact | None:
    for _ in range(50):
        contact = world.contact(rng.randrange(world.contact_count))
        if getattr(contact, field) is not None:
            return contact
    return None


def _valid_event(
    world: World, rng: random.Random, base: dict[str, Any], kind: PreferenceEventType, opted_in: _Pool, opted_out: _Pool
) -> PreferenceEvent:
    h = rng.getrandbits(32)
    if kind is T.SMS_OPT_OUT:
        taken = opted_in.take()
        if taken is not None:
            opted_out.add(taken)
            return PreferenceEvent(**base, org_id=taken[0], source=Src.CONTACT, type=kind, phone=taken[1])
        kind = T.SMS_OPT_IN  # nothing opted in yet: SPEC §8 wants the opt-in first
    if kind is T.ORG_SETTINGS_CHANGED:
        org = rng.choice(world.organizations)
        settings = OrgSettings(
            UnsubscribeScope.ORGANIZATION if h % 4 == 0 else UnsubscribeScope.DOMAIN,
            UserOptOutScope.ORGANIZATION if (h >> 4) % 3 == 0 else UserOptOutScope.USER,
        )
        return PreferenceEvent(**base, org_id=org.org_id, source=Src.API, type=kind, settings=settings)
    if kind is T.SMS_OPT_IN:
        contact = _contact_with(world, rng, "phone")
        if contact is not None:
            opted_in.add((contact.org.org_id, contact.phone))  # type: ignore[arg-type]
            return PreferenceEvent(
                **base, org_id=contact.org.org_id, source=Src.CONTACT, type=kind, phone=contact.phone
            )
        kind = T.CONTACT_SILENCED
    if kind.name.startswith("EMAIL_"):
        contact = _contact_with(world, rng, "email")
        if contact is None:
            kind = T.CONTACT_SILENCED
        else:
            org = contact.org
            email = raw_email(contact.email, h)  # type: ignore[arg-type]
            fields: dict[str, Any] = {"org_id": org.org_id, "type": kind, "email": email}
            if kind is T.EMAIL_OPT_OUT_USER:
                fields.update(source=Src.USER, user_id=rng.choice(org.users))
            elif kind is T.EMAIL_OPT_OUT_ORGANIZATION:
                fields.update(source=(Src.PREFERENCE_CENTER, Src.USER, Src.IMPORT)[h % 3])
            elif kind is T.EMAIL_OPT_OUT_DOMAIN:
                fields.update(source=Src.PREFERENCE_CENTER, domain=rng.choice(org.sender_domains))
            else:  # EMAIL_UNSUBSCRIBE: now and then without the sender domain (org level then)
                domain = rng.choice(org.sender_domains) if h % 10 else None
                fields.update(source=Src.PREFERENCE_CENTER, domain=domain)
            return PreferenceEvent(**base, **fields)
    contact = world.contact(rng.randrange(world.contact_count))
    fields = {"org_id": contact.org.org_id, "type": kind, "contact_id": contact.contact_id, "source": Src.USER}
    if kind is T.CONTACT_DO_NOT_CONTACT:
        fields.update(email=contact.email, phone=contact.phone)
        if contact.phone is not None:
            opted_out.add((contact.org.org_id, contact.phone))
    elif kind is T.CONTACT_OK_TO_EMAIL_SET:
        fields.update(source=Src.API if h % 2 else Src.IMPORT, ok_to_email=h % 10 >= 7)
    return PreferenceEvent(**base, **fields)


def _invalid_event(world: World, rng: random.Random, base: dict[str, Any], opted_out: _Pool) -> PreferenceEvent:
    contact = world.contact(rng.randrange(world.contact_count))
    org_id = contact.org.org_id
    reason = rng.choice(INVALID_KINDS)
    if reason is RejectionReason.IRREVERSIBLE:
        taken = opted_out.pick()
        if taken is not None:  # opting a number back in after its opt-out
            return PreferenceEvent(**base, org_id=taken[0], source=Src.CONTACT, type=T.SMS_OPT_IN, phone=taken[1])
        reason = RejectionReason.SMS_NOT_OPTED_IN
    if reason is RejectionReason.MISSING_FIELD:
        if rng.random() < 0.5:
            return PreferenceEvent(**base, org_id=org_id, source=Src.PREFERENCE_CENTER, type=T.EMAIL_OPT_OUT_ORGANIZATION)
        return PreferenceEvent(**base, org_id=org_id, source=Src.USER, type=T.CONTACT_SILENCED)
    if reason is RejectionReason.INVALID_ADDRESS:
        if rng.random() < 0.5:
            return PreferenceEvent(
                **base, org_id=org_id, source=Src.IMPORT, type=T.EMAIL_OPT_OUT_ORGANIZATION, email=rng.choice(INVALID_EMAILS)
            )
        return PreferenceEvent(**base, org_id=org_id, source=Src.CONTACT, type=T.SMS_OPT_IN, phone=rng.choice(INVALID_PHONES))
    if reason is RejectionReason.SOURCE_NOT_ALLOWED:
        return PreferenceEvent(
            **base, org_id=org_id, source=Src.USER, type=T.CONTACT_OK_TO_EMAIL_SET, contact_id=contact.contact_id, ok_to_email=False
        )
    # SMS_NOT_OPTED_IN: a number outside the world's area codes, never opted in.
    phone = f"+1900{rng.randrange(2_000_000, 10_000_000)}"
    return PreferenceEvent(**base, org_id=org_id, source=Src.CONTACT, type=T.SMS_OPT_OUT, phone=phone)


def generate_sends(
    world: World,
    count: int,
    *,
    seed: int,
    base_time_ms: int,
    start: int = 0,
    email_share: float = 0.7,
    marketing_share: float = 0.75,
    invalid_share: float = 0.01,
) -> Iterator[SendRequest]:
    """``count`` send requests to random contacts: EMAIL/SMS, MARKETING/TRANSACTIONAL, some invalid addresses.

    Message ids are ``m-<seed>-<n>`` for n from ``start``; ``requested_at``
    grows by 1 ms per request. Same arguments, same requests.
    """
    rng = random.Random(f"sendgate-sends-{seed}-{start}")
    factory = SendFactory(seed=seed)
    produced = 0
    while produced < count:
        contact = world.contact(rng.randrange(world.contact_count))
        if contact.email is None and contact.phone is None:
            continue  # a record without a channel gets no campaign
        h = rng.getrandbits(32)
        email = contact.email is not None and (contact.phone is None or rng.random() < email_share)
        org = contact.org
        user = rng.choice(org.users)
        domain = rng.choice(org.sender_domains)
        category = Category.MARKETING if rng.random() < marketing_share else Category.TRANSACTIONAL
        from_ = None
        if email:
            channel, to = Channel.EMAIL, raw_email(contact.email, h)  # type: ignore[arg-type]
        else:
            channel, to = Channel.SMS, raw_phone(contact.phone, h)  # type: ignore[arg-type]
        if rng.random() < invalid_share:
            if email and h % 5 == 0:
                from_ = "no-reply@"  # the sender is broken, not the recipient
            else:
                to = rng.choice(INVALID_EMAILS if email else INVALID_PHONES)
        n = start + produced
        yield factory.build(
            message_id=f"m-{seed}-{n}", contact=contact, channel=channel, category=category, user=user,
            sender_domain=domain, to=to, requested_at=base_time_ms + produced, h=h, from_=from_,
        )
        produced += 1
