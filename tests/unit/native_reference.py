"""The Python reference side by side with the compiled core, for the property tests.

``reference_batch`` runs what the gate ran before the core (codec head reader,
``DecisionPolicy``, ``FactAddressing``, ``AvroCodec.encode_suppressed``) over a
batch of values and a fact map; ``core_batch`` runs ``worker._native`` over the
same values, reading the facts through an imitation of the read script over the
same facts laid out in Redis' (key, field) form.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fastavro
from pydantic import SecretStr

from worker.codec import AvroCodec
from worker.codec.errors import DecodeError
from worker.codec.schemas import schema_dir, strip_logical_types
from worker.config import Settings, StateSettings
from worker.gate.core import ReferenceFallback, build_core, error_class
from worker.models import SendHead
from worker.policy.decision import DecisionPolicy
from worker.policy.facts import FactKey
from worker.state.addressing import FIELD_BYTES, FactAddressing

OLD_SEND_ID = 11
STATE_TEXT = "gen=g1;applied=0:7"
POLICY_VERSION = "pv-1"
GATE_INSTANCE = "gate-é1"


def older_send_request_schema() -> dict[str, Any]:
    """SendRequest as a first version might have had it: no campaign_id, payload, attributes."""
    schema = json.loads((schema_dir() / "SendRequest.avsc").read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in ("campaign_id", "payload", "attributes")]
    return schema


def encode_with(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(strip_logical_types(copy.deepcopy(schema))), record)
    return buffer.getvalue()


def make_codec() -> AvroCodec:
    codec = AvroCodec()
    codec.register_writer(OLD_SEND_ID, "SendRequest", older_send_request_schema())
    return codec


def make_settings(*, secret: str = "s3cret", buckets: int = 8, region: str = "US", shards: int = 16) -> Settings:
    return Settings(
        state=StateSettings(
            hash_secret=SecretStr(secret), key_prefix="sgt", buckets_per_org=buckets, default_phone_region=region, shards=shards
        ),
        gate={"policy_version": POLICY_VERSION, "instance_id": GATE_INSTANCE},
    )


class RecordingFallback(ReferenceFallback):
    """The reference fallback, remembering what the core asked it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.emails: list[str] = []
        self.phones: list[str] = []
        self.heads = 0
        self.ints: list[str] = []

    def decode_head(self, value: Any) -> SendHead | tuple[str, str]:
        self.heads += 1
        return super().decode_head(value)

    def normalize_email(self, raw: str) -> str | None:
        self.emails.append(raw)
        return super().normalize_email(raw)

    def normalize_phone(self, raw: str) -> str | None:
        self.phones.append(raw)
        return super().normalize_phone(raw)

    def int_text(self, raw: str) -> str | None:
        self.ints.append(raw)
        return super().int_text(raw)


@dataclass
class Side:
    """One side's answer for a batch, in comparable plain values."""

    poison: list[tuple[int, str, str]] = field(default_factory=list)
    # index -> (to, sender_domain, [(key, field), ...])
    prepared: dict[int, tuple[str | None, str | None, list[tuple[str, bytes]]]] = field(default_factory=dict)
    read_keys: list[str] = field(default_factory=list)
    read_fields: list[bytes] = field(default_factory=list)
    # index -> (reasons, details, bypassed)
    verdicts: dict[int, tuple[list[str], dict[str, str], list[str]]] = field(default_factory=dict)
    suppressed: dict[int, bytes] = field(default_factory=dict)
    decisions: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    bypasses: Counter[str] = field(default_factory=Counter)


def reference_batch(
    values: list[bytes | None], facts: dict[FactKey, str], *, codec: AvroCodec, settings: Settings, now_ms: int
) -> Side:
    """What the gate's Python path answers for ``values`` on ``facts``."""
    side = Side()
    policy = DecisionPolicy(default_phone_region=settings.state.default_phone_region)
    addressing = FactAddressing(settings.state)
    prepared = {}
    for index, value in enumerate(values):
        try:
            head = codec.decode_send_head(value)
        except (DecodeError, KeyError, ValueError, TypeError) as exc:
            side.poison.append((index, error_class(exc), str(exc)))
            continue
        ready = policy.prepare(head)  # type: ignore[arg-type]  # the gate passes heads
        prepared[index] = (head, ready)
        side.prepared[index] = (ready.to, ready.sender_domain, addressing.locate_all(ready.keys))
    all_keys = dict.fromkeys(key for _, ready in prepared.values() for key in ready.keys)
    groups = addressing.group(all_keys)
    side.read_keys = list(groups)
    side.read_fields = [b"".join(fields) for _, fields in groups.values()]
    for index, (head, ready) in prepared.items():
        decision = policy.decide(ready, {key: facts.get(key) for key in ready.keys})
        side.verdicts[index] = (
            [r.value for r in decision.reasons],
            dict(decision.details),
            [r.value for r in decision.bypassed],
        )
        channel, category = head.channel.value, head.category.value
        if decision.reasons:
            side.decisions[(channel, category, "suppressed", decision.reasons[0].value)] += 1
            # fastavro's own encoding of the SuppressedSend, not the codec's fast path
            fields = {
                "reasons": [r.value for r in decision.reasons],
                "primary_reason": decision.reasons[0].value,
                "details": {**decision.details, "state": STATE_TEXT},
                "decided_at": now_ms,
                "policy_version": POLICY_VERSION,
                "gate_instance": GATE_INSTANCE,
            }
            side.suppressed[index] = codec.encode("SuppressedSend", {"request": codec.decode("SendRequest", values[index]), **fields})
        else:
            side.decisions[(channel, category, "allowed", "NONE")] += 1
            for reason in decision.bypassed:
                side.bypasses[reason.value] += 1
    return side


def redis_layout(facts: dict[FactKey, str], settings: Settings) -> dict[str, dict[bytes, bytes]]:
    """``facts`` as the applier writes them: hash key -> field -> value."""
    addressing = FactAddressing(settings.state)
    hashes: dict[str, dict[bytes, bytes]] = {}
    for fact, (key, hash_field) in zip(facts, addressing.locate_all(facts), strict=True):
        hashes.setdefault(key, {})[hash_field] = facts[fact].encode()
    return hashes


def read_script(keys: list[str], fields: list[bytes], hashes: dict[str, dict[bytes, bytes]]) -> tuple[int, list[Any]]:
    """``scripts.READ`` over ``hashes``: (fields read, the (position, value) pairs of those present)."""
    found: list[Any] = []
    n = 0
    for key, packed in zip(keys, fields, strict=True):
        held = hashes.get(key, {})
        for at in range(0, len(packed), FIELD_BYTES):
            n += 1
            value = held.get(packed[at : at + FIELD_BYTES])
            if value is not None:
                found += [n, value]
    return n, found


def core_batch(
    values: list[bytes | None],
    facts: dict[FactKey, str],
    *,
    codec: AvroCodec,
    settings: Settings,
    now_ms: int,
    fallback: ReferenceFallback | None = None,
) -> Side:
    """What ``worker._native`` answers for ``values`` on ``facts``."""
    core = build_core(settings, codec, latency_bounds=[0.1, 1.0, float("inf")], fallback=fallback)
    batch = core.prepare(values)
    side = Side(poison=list(batch.poison), read_keys=list(batch.keys), read_fields=list(batch.fields))
    for index, to, sender_domain, located in batch.describe():
        side.prepared[index] = (to, sender_domain, list(located))
    n, found = read_script(batch.keys, batch.fields, redis_layout(facts, settings))
    assert n == batch.fact_count
    outcome = batch.decide(found, now_ms, STATE_TEXT)
    side.poison += list(outcome.poison)
    for index, reasons, details, bypassed in outcome.verdicts():
        side.verdicts[index] = (reasons, details, bypassed)
    side.suppressed = {index: value for index, value, _ in outcome.suppressed}
    side.decisions = Counter(outcome.decisions)
    side.bypasses = Counter(outcome.bypasses)
    primaries = {index: primary for index, _, primary in outcome.suppressed}
    for index, (reasons, _, _) in side.verdicts.items():
        if reasons:
            assert primaries[index] == reasons[0]
    routed = sorted([*outcome.allowed, *(i for i, _ in outcome.bypassed), *primaries])
    assert routed == sorted(side.verdicts), "every decided record is routed exactly once"
    for index, names in outcome.bypassed:
        assert names.split(",") == side.verdicts[index][2]
    return side
