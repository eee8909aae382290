"""The generated world: organizations, their users and sender domains, and contacts.

Everything is a pure function of a seed and an index, so a world of millions
of contacts costs no memory and the same seed always yields the same world.
Contacts sometimes duplicate an earlier contact of their organization (the
same person entered twice: same email address and cell phone), which is what
makes address-keyed opt-outs reach several contacts (SPEC §3).

:class:`BenchPlan` lays the bench's traffic over such a world: exact numbers
of opt-outs and contact facts, and a send stream with a chosen suppressed share.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
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

_MASK64 = (1 << 64) - 1

FIRST_NAMES = (
    "maria", "james", "li", "fatima", "john", "olga", "ahmed", "sofia", "david", "aiko", "carlos", "emma",
    "noah", "priya", "lucas", "chen", "amara", "ivan", "zoe", "omar", "hana", "pedro", "grace", "yusuf",
)
LAST_NAMES = (
    "garcia", "smith", "wang", "khan", "johnson", "ivanova", "hassan", "rossi", "brown", "tanaka", "lopez",
    "miller", "nguyen", "patel", "silva", "kim", "okafor", "petrov", "martin", "ali", "sato", "costa",
)
# Reserved example domains only (RFC 2606 and friends), by share in percent;
# about one address in a hundred has an IDN domain, so normalisation to
# punycode is on the path as in real traffic, at a realistic rate.
_DOMAIN_SHARES = (
    ("example.com", 40), ("example.net", 20), ("example.org", 10), ("mail.example", 12),
    ("inbox.example", 10), ("post.example", 7), ("bücher.example", 1),
)
EMAIL_DOMAINS = tuple(domain for domain, share in _DOMAIN_SHARES for _ in range(share))
ORG_WORDS = ("summit", "harbor", "keystone", "prairie", "liberty", "cedar", "pioneer", "beacon", "granite", "meridian")
ORG_KINDS = ("lending", "mortgage", "home-loans", "credit-union", "realty", "capital")
AREA_CODES = ("212", "213", "305", "312", "415", "469", "503", "617", "646", "702", "713", "808", "917", "971")


def mix(*values: int) -> int:
    """A well-spread 64-bit hash of integers, the same in every run.

    CPython's tuple hash (xxHash rounds over the ints, which hash to
    themselves): no hash randomisation applies to ints, and it costs a tenth of
    a hand-written mixer in Python, which matters at millions of contacts.
    """
    return hash(values) & _MASK64


@dataclass(frozen=True, slots=True)
class Organization:
    """A tenant: its users (senders), sender domains and its slice of the contact indexes."""

    index: int
    org_id: str
    users: tuple[str, ...]
    sender_domains: tuple[str, ...]
    sms_sender: str
    first_contact: int
    contact_count: int


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact record; ``duplicate_of`` is the global index of the contact it duplicates."""

    index: int
    org: Organization
    contact_id: str
    email: str | None
    phone: str | None
    duplicate_of: int | None = None


class World:
    """A reproducible population of organizations and contacts.

    Organization sizes are skewed (a few large tenants, a long tail), as in a
    multi-tenant product. A share of contacts duplicates an earlier contact of
    the same organization and shares its email address and phone number.
    """

    def __init__(
        self,
        *,
        seed: int,
        orgs: int,
        contacts: int,
        duplicate_share: float = 0.08,
        email_share: float = 0.95,
        phone_share: float = 0.8,
    ) -> None:
        if orgs < 1 or contacts < orgs:
            raise ValueError(f"need at least one organization and one contact per organization ({orgs=}, {contacts=})")
        self.seed = seed
        self.contact_count = contacts
        # Shares as 16-bit thresholds, compared with hash bits.
        self._duplicate = int(duplicate_share * 65536)
        self._email = int(email_share * 65536)
        self._phone = int(phone_share * 65536)
        self.organizations = self._organizations(orgs, contacts)
        self._starts = [org.first_contact for org in self.organizations]

    def _organizations(self, orgs: int, contacts: int) -> tuple[Organization, ...]:
        weights = [1.0 / (k + 1) ** 0.7 for k in range(orgs)]
        total = sum(weights)
        sizes = [max(1, int(contacts * w / total)) for w in weights]
        sizes[0] += contacts - sum(sizes)  # the largest absorbs the rounding
        while sizes[0] < 1:  # many tiny organizations: take back from the largest others
            donor = max(range(1, orgs), key=sizes.__getitem__)
            sizes[donor] -= 1
            sizes[0] += 1
        result = []
        first = 0
        for k, size in enumerate(sizes):
            h = mix(self.seed, 1, k)
            name = f"{ORG_WORDS[h % len(ORG_WORDS)]}-{ORG_KINDS[(h >> 8) % len(ORG_KINDS)]}-{k}"
            users = tuple(f"user-{j}" for j in range(1, 2 + (h >> 16) % 19))
            domains = (f"{name}.example", f"{name}-dba.example", f"mail.{name}.example")[: 1 + (h >> 24) % 3]
            sms_sender = f"7{k % 10000:04d}"  # a short code
            result.append(Organization(k, f"org-{k:04d}", users, domains, sms_sender, first, size))
            first += size
        return tuple(result)

    def organization_of(self, index: int) -> Organization:
        return self.organizations[bisect.bisect_right(self._starts, index) - 1]

    def contact(self, index: int) -> Contact:
        """The contact with global ``index`` (0 ≤ index < contact_count)."""
        org = self.organization_of(index)
        local = index - org.first_contact
        owner = self._original(org, local)
        email, phone = self._addresses(org, owner)
        duplicate_of = org.first_contact + owner if owner != local else None
        return Contact(index, org, f"contact-{local}", email, phone, duplicate_of)

    def _original(self, org: Organization, local: int) -> int:
        """The local index whose addresses ``local`` carries (itself unless it is a duplicate)."""
        while local > 0:
            h = mix(self.seed, 2, org.first_contact + local)
            if h & 0xFFFF >= self._duplicate:
                return local
            local = (h >> 16) % local
        return local

    def _addresses(self, org: Organization, local: int) -> tuple[str | None, str | None]:
        h = mix(self.seed, 3, org.first_contact + local)
        email = phone = None
        if h & 0xFFFF < self._email:
            first = FIRST_NAMES[(h >> 16) % len(FIRST_NAMES)]
            last = LAST_NAMES[(h >> 24) % len(LAST_NAMES)]
            domain = EMAIL_DOMAINS[(h >> 32) % len(EMAIL_DOMAINS)]
            email = f"{first}.{last}{local}@{domain}"
        if (h >> 40) & 0xFFFF < self._phone:
            p = mix(self.seed, 4, org.first_contact + local)
            exchange = 200 + p % 800
            phone = f"+1{AREA_CODES[(p >> 10) % len(AREA_CODES)]}{exchange}{(p >> 20) % 10000:04d}"
        return email, phone


def coprime_stride(n: int, seed: int) -> int:
    """A stride coprime with ``n``: ``i * stride % n`` visits every index once, well spread."""
    if n <= 2:
        return 1
    stride = (int(n * 0.6180339887) + mix(seed, 5) % max(1, n // 100)) % n or 1
    while _gcd(stride, n) != 1:
        stride = stride % (n - 1) + 1
    return stride


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


# -- addresses as systems spell them, and send requests ------------------------
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



# -- the bench's traffic (sendgate bench) --------------------------------------
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
                yield self._send(message_id, contact, Channel.EMAIL, Category.MARKETING, h, at, to=INVALID_EMAILS[pick % len(INVALID_EMAILS)])
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
        return self._sends.build(
            message_id=message_id, contact=contact, channel=channel, category=category, user=user,
            sender_domain=domain, to=to, requested_at=at, h=h,  # type: ignore[arg-type]
        )
