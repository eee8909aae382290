"""SuppressedSend values built around the suppressed request's own bytes.

A SuppressedSend begins with the SendRequest it suppresses, and Avro's binary
encoding of a record is its fields' encodings one after another. So when the
request was written with our own SendRequest schema (the gate has already
validated all of it), its body is copied as it is and only the decision's
fields are encoded here: no decoding of the request, no fastavro call.
Requests of any other writer schema are decoded and re-encoded by
:meth:`worker.codec.avro.AvroCodec.encode_suppressed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def encode_long(n: int) -> bytes:
    """Avro ``long``/``int``: zig-zag, then little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Small non-negative longs (counts, enum indexes, short lengths) are one byte.
_SMALL = [encode_long(n) for n in range(64)]


def encode_string(text: str) -> bytes:
    data = text.encode()
    size = len(data)
    return (_SMALL[size] if size < 64 else encode_long(size)) + data


def reason_symbols(suppressed_schema: Mapping[str, Any]) -> list[str]:
    """The SuppressionReason symbols, in index order, of the SuppressedSend schema ``reasons`` field."""
    for field in suppressed_schema["fields"]:
        if field["name"] == "reasons":
            return list(field["type"]["items"]["symbols"])
    raise ValueError("SuppressedSend schema has no reasons field")


class SuppressedTail:
    """Encodes the fields that follow ``request`` in a SuppressedSend."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self._index = {symbol: _SMALL[i] if i < 64 else encode_long(i) for i, symbol in enumerate(symbols)}

    def encode(self, decision: Mapping[str, Any]) -> bytes:
        """``decision``'s reasons, primary_reason, details, decided_at, policy_version and gate_instance, in that order."""
        index = self._index
        reasons = decision["reasons"]
        details = decision["details"]
        parts = []
        if reasons:  # an array is blocks of (count, items), ended by an empty block
            parts.append(encode_long(len(reasons)))
            parts.extend(index[reason] for reason in reasons)
        parts.append(b"\x00")
        parts.append(index[decision["primary_reason"]])
        if details:  # a map likewise, its entries key then value
            parts.append(encode_long(len(details)))
            for key, value in details.items():
                parts.append(encode_string(key))
                parts.append(encode_string(value))
        parts.append(b"\x00")
        parts.append(encode_long(decision["decided_at"]))
        parts.append(encode_string(decision["policy_version"]))
        parts.append(encode_string(decision["gate_instance"]))
        return b"".join(parts)
