"""Where a fact's shard comes from: its subject's keyed digest, through its bucket; one hash tag per shard."""

from __future__ import annotations

import re

from worker.config import StateSettings
from worker.policy.facts import FactKey, FactKind
from worker.state.addressing import FactAddressing


def test_one_organization_is_spread_over_every_shard_and_each_key_names_its_shard():
    addressing = FactAddressing(StateSettings(key_prefix="sgx", shards=16, buckets_per_org=1024))
    facts = [FactKey("big-org", FactKind.EMAIL_OPT_OUT_ORGANIZATION, (f"person{i}@example.com",)) for i in range(2000)]
    keys = {key for key, _ in addressing.locate_all(facts)}
    shards = {addressing.shard_of(key) for key in keys}
    assert shards == set(range(16))
    for key in keys:
        tag, bucket = re.fullmatch(r"sgx:\{s(\d+)\}:[0-9a-f]{10}:([0-9a-f]+)", key).groups()  # type: ignore[union-attr]
        assert int(tag) == int(bucket, 16) % 16 == addressing.shard_of(key)


def test_the_meta_of_each_shard_shares_its_hash_tag():
    addressing = FactAddressing(StateSettings(key_prefix="sgx", shards=4))
    assert addressing.meta_keys == ["sgx:{s0}:meta", "sgx:{s1}:meta", "sgx:{s2}:meta", "sgx:{s3}:meta"]
    assert [addressing.shard_of(key) for key in addressing.meta_keys] == [0, 1, 2, 3]


def test_the_layout_fingerprint_changes_with_the_layout_version():
    addressing = FactAddressing(StateSettings())
    assert addressing.secret_fingerprint != FactAddressing(StateSettings(hash_secret="x")).secret_fingerprint
