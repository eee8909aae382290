"""The bench's traffic over a generated world, as functions of positions.

:class:`BenchPlan` lays exact numbers of opt-outs and contact facts over a
:class:`~worker.loadgen.world.World`, and a send stream with a chosen
suppressed share.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from worker.loadgen.records import INVALID_EMAILS, INVALID_KINDS, INVALID_SUFFIX, SendFactory
from worker.loadgen.world import Contact, World, coprime_stride, mix
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

T = PreferenceEventType
Src = PreferenceSource


# Opt-out kinds by share of the opt-outs (percent thresholds, cumulative).
_OPT_OUT_KINDS = (
    (45, T.EMAIL_OPT_OUT_ORGANIZATION),
    (60, T.EMAIL_OPT_OUT_DOMAIN),
    (75, T.EMAIL_OPT_OUT_USER),
    (90, T.EMAIL_UNSUBSCRIBE),
    (100, T.SMS_OPT_OUT),
)
# Contact facts: silenced, ok-to-email false / true, do-not-contact.
_CONTACT_KINDS = ((45, "silenced"), (75, "no-email"), (85, "ok-email"), (100, "dnc"))
# Percent → kind, looked up once per position instead of scanning the thresholds.
_OPT_OUT_BY_PERCENT = tuple(next(k for limit, k in _OPT_OUT_KINDS if p < limit) for p in range(100))
_CONTACT_BY_PERCENT = tuple(next(k for limit, k in _CONTACT_KINDS if p < limit) for p in range(100))
_INVALID_EVERY = 1000


@dataclass(frozen=True, slots=True)
class OptOut:
    """The opt-out at one position of the bench's preference topic."""

    kind: PreferenceEventType
    contact: Contact
    user_id: str | None = None
    domain: str | None = None


class BenchPlan:
    """The bench's preference topic and send stream, as functions of positions.

    Contacts are laid out in a spread-out order (``i * stride mod N``) and cut
    into four runs: ``opt_outs`` contacts with one opt-out each, ``contact_facts``
    contacts with a silence / ok-to-email / do-not-contact fact, ``sms_opt_ins``
    contacts opted in to SMS, and clean contacts. A send picks a blocked
    recipient with probability ``suppressed_share`` (built so the fact applies:
    marketing email to an opted-out address, SMS to an opted-out number, ...),
    else a clean one; duplicates and invalid addresses add a little on top.
    """

    def __init__(
        self,
        *,
        seed: int,
        orgs: int,
        opt_outs: int,
        contact_facts: int,
        sms_opt_ins: int,
        clean_contacts: int,
        suppressed_share: float = 0.2,
    ) -> None:
        self.seed = seed
        self.opt_outs = opt_outs
        self.contact_facts = contact_facts
        self.sms_opt_ins = sms_opt_ins
        self.suppressed_share = suppressed_share
        size = opt_outs + contact_facts + sms_opt_ins + clean_contacts
        # Every contact reachable on both channels: the bench wants exact fact counts.
        self.world = World(seed=seed, orgs=orgs, contacts=size, email_share=1.0, phone_share=1.0)
        self._stride = coprime_stride(size, seed)
        self._size = size
        self._sends = SendFactory(seed=seed)

    def contact_at(self, position: int) -> Contact:
        return self.world.contact(position * self._stride % self._size)

    def opt_out(self, position: int) -> OptOut:
        """The opt-out of position ``0 <= position < opt_outs``."""
        contact = self.contact_at(position)
        h = mix(self.seed, 6, position)
        kind = _OPT_OUT_BY_PERCENT[h % 100]
        org = contact.org
        if kind is T.EMAIL_OPT_OUT_USER:
            return OptOut(kind, contact, user_id=org.users[(h >> 8) % len(org.users)])
        if kind is T.EMAIL_OPT_OUT_DOMAIN or kind is T.EMAIL_UNSUBSCRIBE:
            return OptOut(kind, contact, domain=org.sender_domains[(h >> 8) % len(org.sender_domains)])
        return OptOut(kind, contact)

    def contact_fact(self, position: int) -> tuple[str, Contact]:
        """The contact fact of position ``opt_outs <= position < opt_outs + contact_facts``."""
        return _CONTACT_BY_PERCENT[mix(self.seed, 7, position) % 100], self.contact_at(position)

    # -- preference events ----------------------------------------------------
    def events(self, *, base_time_ms: int) -> Iterator[PreferenceEvent]:
        """Organization settings, the opt-outs (SMS ones after their opt-in), contact facts,
        SMS opt-ins, and one event in a thousand built to be rejected."""
        counter = itertools.count()
        seed = self.seed

        def base() -> dict[str, Any]:
            n = next(counter)
            return {"event_id": f"be-{seed}-{n}", "occurred_at": base_time_ms + n}

        for org in self.world.organizations:
            h = mix(seed, 8, org.index)
            settings = OrgSettings(
                UnsubscribeScope.ORGANIZATION if h % 5 == 0 else UnsubscribeScope.DOMAIN,
                UserOptOutScope.ORGANIZATION if (h >> 8) % 4 == 0 else UserOptOutScope.USER,
            )
            yield PreferenceEvent(**base(), org_id=org.org_id, source=Src.API, type=T.ORG_SETTINGS_CHANGED, settings=settings)
        last_phone: tuple[str, str] | None = None
        for position in range(self.opt_outs):
            o = self.opt_out(position)
            org_id = o.contact.org.org_id
            if o.kind is T.SMS_OPT_OUT:
                phone = o.contact.phone
                yield PreferenceEvent(**base(), org_id=org_id, source=Src.CONTACT, type=T.SMS_OPT_IN, phone=phone)
                yield PreferenceEvent(**base(), org_id=org_id, source=Src.CONTACT, type=T.SMS_OPT_OUT, phone=phone)
                last_phone = (org_id, phone)  # type: ignore[assignment]
            else:
                source = Src.USER if o.kind is T.EMAIL_OPT_OUT_USER else Src.PREFERENCE_CENTER
                yield PreferenceEvent(
                    **base(), org_id=org_id, source=source, type=o.kind, email=o.contact.email, user_id=o.user_id, domain=o.domain
                )
            if position % _INVALID_EVERY == _INVALID_EVERY - 1:
                invalid = base()
                invalid["event_id"] += INVALID_SUFFIX
                yield self._invalid(invalid, position // _INVALID_EVERY, o.contact, last_phone)
        for position in range(self.opt_outs, self.opt_outs + self.contact_facts):
            kind, contact = self.contact_fact(position)
            fields: dict[str, Any] = {"org_id": contact.org.org_id, "contact_id": contact.contact_id}
            if kind == "silenced":
                fields.update(source=Src.USER, type=T.CONTACT_SILENCED)
            elif kind == "dnc":
                fields.update(source=Src.USER, type=T.CONTACT_DO_NOT_CONTACT, email=contact.email, phone=contact.phone)
            else:
                fields.update(source=Src.IMPORT, type=T.CONTACT_OK_TO_EMAIL_SET, ok_to_email=kind == "ok-email")
            yield PreferenceEvent(**base(), **fields)
        first = self.opt_outs + self.contact_facts
        for position in range(first, first + self.sms_opt_ins):
            contact = self.contact_at(position)
            yield PreferenceEvent(
                **base(), org_id=contact.org.org_id, source=Src.CONTACT, type=T.SMS_OPT_IN, phone=contact.phone
            )

    @staticmethod
    def _invalid(base: dict[str, Any], n: int, contact: Contact, last_phone: tuple[str, str] | None) -> PreferenceEvent:
        org_id = contact.org.org_id
        kind = INVALID_KINDS[n % len(INVALID_KINDS)]
        if kind is RejectionReason.IRREVERSIBLE and last_phone is not None:
            return PreferenceEvent(**base, org_id=last_phone[0], source=Src.CONTACT, type=T.SMS_OPT_IN, phone=last_phone[1])
        if kind is RejectionReason.MISSING_FIELD:
            return PreferenceEvent(**base, org_id=org_id, source=Src.PREFERENCE_CENTER, type=T.EMAIL_OPT_OUT_ORGANIZATION)
        if kind is RejectionReason.INVALID_ADDRESS:
            return PreferenceEvent(**base, org_id=org_id, source=Src.IMPORT, type=T.EMAIL_OPT_OUT_ORGANIZATION, email="not-an-address")
        if kind is RejectionReason.SOURCE_NOT_ALLOWED:
            return PreferenceEvent(
                **base, org_id=org_id, source=Src.USER, type=T.CONTACT_OK_TO_EMAIL_SET, contact_id=contact.contact_id, ok_to_email=False
            )
        return PreferenceEvent(**base, org_id=org_id, source=Src.CONTACT, type=T.SMS_OPT_OUT, phone=f"+1900{2_000_000 + n}")

    # -- send requests ----------------------------------------------------------
    def sends(self, count: int, *, base_time_ms: int, start: int = 0, id_prefix: str = "b") -> Iterator[SendRequest]:
        """``count`` requests, ids ``<id_prefix>-<seed>-<n>`` for n from ``start``."""
        blocked_until = self.opt_outs + self.contact_facts
        sms_first = blocked_until
        clean_first = blocked_until + self.sms_opt_ins
        threshold = int(self.suppressed_share * 1_000_000)
        seed = self.seed
        for n in range(start, start + count):
            h = mix(seed, 9, n)
            u = h % 1_000_000
            pick = h >> 20
            at = base_time_ms + n - start
            message_id = f"{id_prefix}-{seed}-{n}"
            if u < threshold and blocked_until:
                yield self._blocked_send(message_id, pick % blocked_until, h, at)
            elif u < threshold + 5_000:  # 0.5 %: an address no one can parse
                contact = self.contact_at(clean_first + pick % max(1, self._size - clean_first) if clean_first < self._size else 0)
                invalid = INVALID_EMAILS[pick % len(INVALID_EMAILS)]
                yield self._send(message_id, contact, Channel.EMAIL, Category.MARKETING, h, at, to=invalid)
            elif u < threshold + 35_000 and self.opt_outs:  # 3 %: transactional email past an opt-out (allowed)
                contact = self.opt_out(pick % self.opt_outs).contact
                yield self._send(message_id, contact, Channel.EMAIL, Category.TRANSACTIONAL, h, at)
            elif (pick & 7) < 3 and self.sms_opt_ins:  # SMS to opted-in numbers
                contact = self.contact_at(sms_first + pick % self.sms_opt_ins)
                category = Category.MARKETING if (pick >> 3) % 10 else Category.TRANSACTIONAL
                yield self._send(message_id, contact, Channel.SMS, category, h, at)
            else:
                clean = self._size - clean_first
                contact = self.contact_at(clean_first + pick % clean) if clean else self.contact_at(pick % self._size)
                category = Category.MARKETING if (pick >> 3) % 10 < 7 else Category.TRANSACTIONAL
                yield self._send(message_id, contact, Channel.EMAIL, category, h, at)

    def _blocked_send(self, message_id: str, position: int, h: int, at: int) -> SendRequest:
        if position < self.opt_outs:
            o = self.opt_out(position)
            if o.kind is T.SMS_OPT_OUT:
                return self._send(message_id, o.contact, Channel.SMS, Category.MARKETING, h, at)
            return self._send(message_id, o.contact, Channel.EMAIL, Category.MARKETING, h, at, user=o.user_id, domain=o.domain)
        kind, contact = self.contact_fact(position)
        if kind in ("silenced", "dnc") and h & 1:
            return self._send(message_id, contact, Channel.SMS, Category.TRANSACTIONAL, h, at)
        return self._send(message_id, contact, Channel.EMAIL, Category.TRANSACTIONAL, h, at)

    def _send(
        self, message_id: str, contact: Contact, channel: Channel, category: Category, h: int, at: int, *,
        to: str | None = None, user: str | None = None, domain: str | None = None,
    ) -> SendRequest:
        org = contact.org
        user = user or org.users[(h >> 40) % len(org.users)]
        domain = domain or org.sender_domains[(h >> 48) % len(org.sender_domains)]
        if to is None:
            to = contact.email if channel is Channel.EMAIL else contact.phone
        if to is None:
            raise ValueError(f"contact {contact.index} has no {channel.value} address (the bench's world gives every contact both)")
        return self._sends.build(
            message_id=message_id, contact=contact, channel=channel, category=category, user=user,
            sender_domain=domain, to=to, requested_at=at, h=h,
        )
