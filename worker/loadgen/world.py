"""The generated world: organizations, their users and sender domains, and contacts.

Everything is a pure function of a seed and an index, so a world of millions
of contacts costs no memory and the same seed always yields the same world.
Contacts sometimes duplicate an earlier contact of their organization (the
same person entered twice: same email address and cell phone), which is what
makes address-keyed opt-outs reach several contacts (SPEC §3).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

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
