"""Where a fact lives in Redis: keyed digests, so keys hold no personal data.

A fact's field is a keyed BLAKE2b digest of its identity (organization, kind,
normalised subject). Fields are spread over ``buckets_per_org`` small hashes
per organization so each hash stays in Redis' compact listpack encoding
(a few dozen bytes per fact). All keys of an organization share one hash tag,
so a Redis Cluster keeps them in one slot and a batch is read slot by slot.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from worker.config import StateSettings
from worker.policy.facts import FactKey

FIELD_DIGEST_BYTES = 12
ORG_TAG_BYTES = 5


class FactAddressing:
    """Maps facts to (Redis key, hash field) and names the store's metadata key."""

    def __init__(self, settings: StateSettings) -> None:
        self._secret = settings.hash_secret.get_secret_value().encode()
        self._prefix = settings.key_prefix
        self.buckets = settings.buckets_per_org
        self.meta_key = f"{self._prefix}:{{meta}}"
        # Identifies the secret without revealing it: a gate whose secret
        # differs from the applier's would read nothing and allow everything.
        self.secret_fingerprint = hashlib.blake2b(b"sendgate-fingerprint", key=self._secret, digest_size=8).hexdigest()
        self.locate = lru_cache(maxsize=262_144)(self._locate)

    def _locate(self, fact: FactKey) -> tuple[str, bytes]:
        field = hashlib.blake2b(fact.identity(), key=self._secret, digest_size=FIELD_DIGEST_BYTES).digest()
        bucket = int.from_bytes(field[:4], "big") % self.buckets
        return f"{self._prefix}:{{{self._org_tag(fact.org_id)}}}:{bucket:x}", field

    @lru_cache(maxsize=65_536)  # noqa: B019 - one instance per process, bounded
    def _org_tag(self, org_id: str) -> str:
        return hashlib.blake2b(org_id.encode(), key=self._secret, digest_size=ORG_TAG_BYTES).hexdigest()

    def key_pattern(self) -> str:
        """A SCAN pattern matching every key of this store."""
        return f"{self._prefix}:*"
