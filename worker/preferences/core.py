"""The applier's compiled core (``worker._native.ApplierCore``), built from settings, and the Python reference it falls back on.

The core does the per-event work of a batch: decode, validate, normalise,
name and lay out the facts, apply the rules of :mod:`worker.policy.events` on
the state read, pack the writes for the commit script. What it is not sure to
answer exactly like the reference it asks :class:`ApplierFallback`: values of
other writer schemas go through fastavro, unusual addresses through
email-validator and phonenumbers.
"""

from __future__ import annotations

from typing import Any

from worker._native import ApplierCore
from worker.codec import AvroCodec
from worker.codec.errors import DecodeError
from worker.config import Settings
from worker.gate.core import ReferenceFallback
from worker.models import PreferenceEvent
from worker.policy.addresses import normalize_domain


def describe_error(exc: BaseException) -> str:
    """The detail of an ``UNDECODABLE`` rejection."""
    return f"{type(exc).__name__}: {exc}"


class ApplierFallback(ReferenceFallback):
    """What the applier's core asks the Python reference (see ``worker/_native.pyi``)."""

    def decode_event(self, value: Any) -> PreferenceEvent | tuple[str, str]:
        try:
            return self._codec.decode_preference_event(value)
        except (DecodeError, KeyError, ValueError, TypeError) as exc:
            return type(exc).__name__, describe_error(exc)

    def normalize_domain(self, raw: str) -> str | None:
        return normalize_domain(raw)


def build_applier_core(settings: Settings, codec: AvroCodec, *, fallback: ApplierFallback | None = None) -> ApplierCore:
    """The core for ``settings``: the store's hash secret and layout, the codec's schema id."""
    state = settings.state
    return ApplierCore(
        hash_secret=state.hash_secret.get_secret_value(),
        key_prefix=state.key_prefix,
        buckets_per_org=state.buckets_per_org,
        shards=state.shards,
        event_schema_id=codec.schema_id("PreferenceEvent"),
        fallback=fallback or ApplierFallback(codec=codec, default_phone_region=state.default_phone_region),
    )
