"""Where a fact lives in Redis: keyed digests, so keys and fields hold no personal data.

Every fact has a *subject* (an email address, a phone number, a contact, or
the organization itself). The subject is hashed once with a keyed BLAKE2b
(the secret of ``SENDGATE_STATE__HASH_SECRET``); a fact's hash field is that
digest, a one-byte kind tag and, for facts qualified by a sending user or a
sender domain, a short digest of the qualifier. All facts of one subject thus
share a hash bucket, the gate hashes each subject once per request, and a
batch read sends one packed string of fields per bucket.

Facts are spread over ``buckets_per_org`` small hashes per organization so
each stays in Redis' compact listpack encoding. The store is split into
``shards``: bucket ``b`` of every organization lives in shard ``b % shards``,
and every key of shard ``N`` (its fact hashes and its meta hash) carries the
hash tag ``{s<N>}``, so each script touches one Redis Cluster slot and one
large organization is spread over every shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache

from worker.config import StateSettings
from worker.policy.facts import FactKey, FactKind

# 3: SMS consent holds its event times (SmsConsent); a store of 2 holds "in"/"out" and is rebuilt.
# 4: sharded: keys carry a shard hash tag, meta and progress are per shard; a store of 3 is rebuilt.
LAYOUT_VERSION = "4"
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


def locations(groups: dict[str, tuple[list[FactKey], list[bytes]]]) -> dict[FactKey, tuple[str, bytes]]:
    """(key, field) per fact of :meth:`FactAddressing.group`'s answer."""
    return {fact: (key, field) for key, (facts, fields) in groups.items() for fact, field in zip(facts, fields, strict=True)}


class FactAddressing:
    """Maps facts to (Redis key, hash field) and names the store's metadata key."""

    def __init__(self, settings: StateSettings) -> None:
        secret = settings.hash_secret.get_secret_value().encode()
        self._prefix = settings.key_prefix
        self.buckets = settings.buckets_per_org
        self.shards = settings.shards
        self.meta_keys = [f"{self._prefix}:{{s{shard}}}:meta" for shard in range(self.shards)]
        self.legacy_meta_key = f"{self._prefix}:{{meta}}"  # the one meta hash of layouts 1-3
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

        Each distinct subject is hashed once.
        """
        subjects: dict[tuple[str, str, str], tuple[str, bytes]] = {}
        groups: dict[str, tuple[list[FactKey], list[bytes]]] = {}
        for fact in facts:
            group, tag = _PLACEMENT[fact.kind]
            name = (fact.org_id, group, fact.subject[0] if fact.subject else "")
            if name not in subjects:
                subjects[name] = self._place(*name)
            key, digest = subjects[name]
            qualifier = self._qualified(fact.subject[1]) if len(fact.subject) > 1 else _NO_QUALIFIER
            members, fields = groups.setdefault(key, ([], []))
            members.append(fact)
            fields.append(digest + tag + qualifier)
        return groups

    def _place(self, org_id: str, group: str, value: str) -> tuple[str, bytes]:
        hasher = self._subject_hasher.copy()
        hasher.update(f"{org_id}\x1f{group}\x1f{value}".encode())
        digest = hasher.digest()
        return self._bucket_key(org_id, int.from_bytes(digest[:4], "big") % self.buckets), digest

    def _qualified_uncached(self, value: str) -> bytes:
        """The digest of a qualifier (the sending user or sender domain of a fact)."""
        hasher = self._qualifier_hasher.copy()
        hasher.update(value.encode())
        return hasher.digest()

    def _bucket_key_uncached(self, org_id: str, bucket: int) -> str:
        hasher = self._org_hasher.copy()
        hasher.update(org_id.encode())
        return f"{self._prefix}:{{s{bucket % self.shards}}}:{hasher.hexdigest()}:{bucket:x}"

    def shard_of(self, key: str) -> int:
        """The shard of one of this store's keys (its ``{s<N>}`` hash tag)."""
        start = len(self._prefix) + 3  # past "<prefix>:{s"
        return int(key[start : key.index("}", start)])

    def key_pattern(self) -> str:
        """A SCAN pattern matching every key of this store."""
        return f"{self._prefix}:*"
