"""The gate's compiled core (``worker._native``), built from settings, and the Python reference it falls back on.

The core does the per-record work of a batch (decode, validate, normalise,
name and lay out the facts; decide; encode SuppressedSends; tally). Whatever
it is not sure to answer exactly like the reference it asks
:class:`ReferenceFallback`, so that record is decided as the pure-Python
policy, codec and addressing would: values of other writer schemas go through
fastavro, unusual addresses through email-validator and phonenumbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker._native import FIELD_BYTES as NATIVE_FIELD_BYTES
from worker._native import GateCore
from worker.codec import AvroCodec
from worker.codec.errors import DecodeError
from worker.config import Settings
from worker.errors import PoisonInput
from worker.models import SendHead
from worker.policy.addresses import normalize_email, normalize_phone
from worker.state.addressing import FIELD_BYTES

if NATIVE_FIELD_BYTES != FIELD_BYTES:  # a stale build of the crate would read the wrong fields
    raise ImportError(f"worker._native lays out {NATIVE_FIELD_BYTES}-byte fields, the store {FIELD_BYTES}: rebuild it")


def error_class(exc: BaseException) -> str:
    """The short class the dead-letter headers and metrics carry."""
    return getattr(exc, "error_class", type(exc).__name__)


class PoisonValue(PoisonInput):
    """A value the core (or the codec it asked) could not decode, as the dead-letter headers name it."""

    def __init__(self, error_class: str, detail: str) -> None:
        super().__init__(detail)
        self.error_class = error_class


class ReferenceFallback:
    """What the core asks the Python reference, one value or address at a time (see ``worker/_native.pyi``)."""

    def __init__(self, *, codec: AvroCodec, default_phone_region: str) -> None:
        self._codec = codec
        self._region = default_phone_region

    def decode_head(self, value: Any) -> SendHead | tuple[str, str]:
        try:
            return self._codec.decode_send_head(value)
        except (DecodeError, KeyError, ValueError, TypeError) as exc:
            return error_class(exc), str(exc)

    def normalize_email(self, raw: str) -> str | None:
        return normalize_email(raw)

    def normalize_phone(self, raw: str) -> str | None:
        return normalize_phone(raw, self._region)

    def int_text(self, raw: str) -> str | None:
        try:
            return str(int(raw))
        except ValueError:
            return None

    def encode_suppressed(self, value: bytes, decision: Mapping[str, Any]) -> bytes | tuple[str, str]:
        # fastavro decodes and encodes the request: the core embeds only bodies in
        # the exact form fastavro writes, so both give the same bytes.
        try:
            return self._codec.encode_suppressed(value, decision)
        except DecodeError as exc:  # prepare accepted it, so this is not expected
            return error_class(exc), str(exc)


def build_core(
    settings: Settings,
    codec: AvroCodec,
    *,
    latency_bounds: Sequence[float] = (),
    fallback: ReferenceFallback | None = None,
) -> GateCore:
    """The core for ``settings``: the store's hash secret and layout, the codec's schema ids.

    ``latency_bounds`` are the decision-latency histogram's bucket bounds, so
    the core can count latencies per bucket.
    """
    state = settings.state
    return GateCore(
        hash_secret=state.hash_secret.get_secret_value(),
        key_prefix=state.key_prefix,
        buckets_per_org=state.buckets_per_org,
        shards=state.shards,
        policy_version=settings.gate.policy_version,
        gate_instance=settings.gate.instance_id,
        send_schema_id=codec.schema_id("SendRequest"),
        suppressed_schema_id=codec.schema_id("SuppressedSend"),
        reason_symbols=codec.suppression_reasons(),
        latency_bounds=list(latency_bounds),
        fallback=fallback or ReferenceFallback(codec=codec, default_phone_region=state.default_phone_region),
    )
