"""Where a fact lives in Redis: keyed digests, so keys and fields hold no personal data.

Every fact has a *subject* (an email address, a phone number, a contact, or
the organization itself). The subject is hashed once with a keyed BLAKE2b
(the secret of ``SENDGATE_STATE__HASH_SECRET``); a fact's hash field is that
digest, a one-byte kind tag and, for facts qualified by a sending user or a
sender domain, a short digest of the qualifier. All facts of one subject thus
share a hash bucket, the gate hashes each subject once per request, and a
batch read sends one packed string of fields per bucket.

Facts are spread over ``buckets_per_org`` small hashes per organization so
each stays in Redis' compact listpack encoding. All keys of an organization
share one hash tag, so a Redis Cluster would keep them in one slot.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Iterable

from worker.config import StateSettings
from worker.policy.facts import FactKey, FactKind

# 3: SMS consent holds its event times (SmsConsent); a store of 2 holds "in"/"out" and is rebuilt.
LAYOUT_VERSION = "3"
SUBJECT_DIGEST_BYTES = 12
QUALIFIER_DIGEST_BYTES = 6
FIELD_BYTES = SUBJECT_DIGEST_BYTES + 1 + QUALIFIER_DIGEST_BYTES
ORG_TAG_BYTES = 5
_NO_QUALIFIER = bytes(QUALIFIER_DIGEST_BYTES)

# (subject group, one-byte tag) per kind: the group keeps an address and a
# contact id that happen to be equal strings apart.
_PLACEMENT: dict[FactKind, tuple[str, bytes]] = {
    FactKind.EMAIL_OPT_OUT_ORGANIZATION: ("email", b"o"),
    FactKind.EMAIL_OPT_OUT_DOMAIN: ("email", b"d"),
    FactKind.EMAIL_OPT_OUT_USER: ("email", b"u"),
    FactKind.EMAIL_OPT_OUT_ANY_USER: ("email", b"a"),
    FactKind.EMAIL_UNSUBSCRIBES: ("email", b"n"),
    FactKind.SMS_CONSENT: ("phone", b"s"),
    FactKind.SILENCED: ("contact", b"q"),
    FactKind.DO_NOT_CONTACT: ("contact", b"x"),
    FactKind.OK_TO_EMAIL: ("contact", b"k"),
    FactKind.ORG_SETTINGS: ("org", b"g"),
}


# (subject group, field suffix) per kind: the suffix of an unqualified fact is
# its tag and an all-zero qualifier, so its field is one concatenation.
_PLACES: dict[FactKind, tuple[str, bytes]] = {kind: (group, tag + _NO_QUALIFIER) for kind, (group, tag) in _PLACEMENT.items()}


def locations(groups: dict[str, tuple[list[FactKey], list[bytes]]]) -> dict[FactKey, tuple[str, bytes]]:
    """(key, field) per fact of :meth:`FactAddressing.group`'s answer."""
    return {fact: (key, field) for key, (facts, fields) in groups.items() for fact, field in zip(facts, fields)}


class FactAddressing:
    """Maps facts to (Redis key, hash field) and names the store's metadata key."""

    def __init__(self, settings: StateSettings) -> None:
        secret = settings.hash_secret.get_secret_value().encode()
        self._prefix = settings.key_prefix
        self.buckets = settings.buckets_per_org
        self.meta_key = f"{self._prefix}:{{meta}}"
        # Keyed once; each digest copies the keyed state instead of re-keying.
        self._subject_hasher = hashlib.blake2b(key=secret, digest_size=SUBJECT_DIGEST_BYTES, person=b"subject")
        self._qualifier_hasher = hashlib.blake2b(key=secret, digest_size=QUALIFIER_DIGEST_BYTES, person=b"qualifier")
        self._org_hasher = hashlib.blake2b(key=secret, digest_size=ORG_TAG_BYTES, person=b"org")
        # Identifies the secret and layout without revealing the secret: a gate
        # whose secret differs from the applier's would read nothing and allow everything.
        # The layout is part of it, so a reader of another layout refuses the store too.
        self.secret_fingerprint = hashlib.blake2b(
            f"sendgate-fingerprint-layout-{LAYOUT_VERSION}".encode(), key=secret, digest_size=8
        ).hexdigest()
        self._qualified = lru_cache(maxsize=65_536)(self._qualified_uncached)
        self._bucket_key = lru_cache(maxsize=262_144)(self._bucket_key_uncached)

    def locate(self, fact: FactKey) -> tuple[str, bytes]:
        return self.locate_all((fact,))[0]

    def locate_all(self, facts: Iterable[FactKey]) -> list[tuple[str, bytes]]:
        """(key, field) of every fact, in order; each distinct subject is hashed once."""
        facts = list(facts)
        where = locations(self.group(facts))
        return [where[fact] for fact in facts]

    def group(self, facts: Iterable[FactKey]) -> dict[str, tuple[list[FactKey], list[bytes]]]:
        """Facts by Redis key: per key, the facts (in input order) and their fields.

        Each distinct subject is hashed once. This runs for every fact a batch
        reads, so the loop is kept to a few local operations: a request's facts
        come subject by subject (the same string objects), so a fact whose
        subject is the previous one's skips even the subject look-up.
        """
        subjects: dict[tuple[str, str, str], tuple[tuple[list[FactKey], list[bytes]], bytes]] = {}
        groups: dict[str, tuple[list[FactKey], list[bytes]]] = {}
        placement = _PLACES
        place = self._place
        qualified = self._qualified
        get_subject = subjects.get
        last_org = last_group = last_value = None
        entry: tuple[list[FactKey], list[bytes]] = ([], [])
        digest = b""
        for fact in facts:
            org_id, kind, subject = fact
            group, suffix = placement[kind]
            value = subject[0] if subject else ""
            if value is not last_value or org_id is not last_org or group is not last_group:
                name = (org_id, group, value)
                found = get_subject(name)
                if found is None:
                    key, digest = place(org_id, group, value)
                    entry = groups.get(key) or groups.setdefault(key, ([], []))
                    subjects[name] = (entry, digest)
                else:
                    entry, digest = found
                last_org, last_group, last_value = org_id, group, value
            entry[0].append(fact)
            entry[1].append(digest + (qualified(suffix, subject[1]) if len(subject) > 1 else suffix))
        return groups

    def _place(self, org_id: str, group: str, value: str) -> tuple[str, bytes]:
        hasher = self._subject_hasher.copy()
        hasher.update(f"{org_id}\x1f{group}\x1f{value}".encode())
        digest = hasher.digest()
        return self._bucket_key(org_id, int.from_bytes(digest[:4], "big") % self.buckets), digest

    def _qualified_uncached(self, suffix: bytes, value: str) -> bytes:
        """The kind tag followed by the qualifier's digest (``suffix`` is the tag + zero padding)."""
        hasher = self._qualifier_hasher.copy()
        hasher.update(value.encode())
        return suffix[:1] + hasher.digest()

    def _bucket_key_uncached(self, org_id: str, bucket: int) -> str:
        hasher = self._org_hasher.copy()
        hasher.update(org_id.encode())
        return f"{self._prefix}:{{{hasher.hexdigest()}}}:{bucket:x}"

    def key_pattern(self) -> str:
        """A SCAN pattern matching every key of this store."""
        return f"{self._prefix}:*"
