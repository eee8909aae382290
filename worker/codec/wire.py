"""The Confluent Schema Registry wire format: magic byte 0, 4-byte big-endian id, body."""

from __future__ import annotations

import struct

from worker.codec.errors import BadMagicByte, EmptyValue, TruncatedValue

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size  # 5


def header(schema_id: int) -> bytes:
    """The 5-byte prefix of every value written with ``schema_id``."""
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def split(value: bytes | bytearray | memoryview | None) -> int:
    """Validate the header of ``value`` and return its schema id; the body starts at HEADER_SIZE."""
    if not value:
        raise EmptyValue("value is empty (tombstone or zero bytes)")
    if value[0] != MAGIC_BYTE:
        raise BadMagicByte(f"first byte is {value[0]}, not the wire-format magic byte 0")
    if len(value) < HEADER_SIZE:
        raise TruncatedValue(f"value is {len(value)} bytes, shorter than the {HEADER_SIZE}-byte header")
    schema_id: int = _HEADER.unpack_from(value)[1]
    return schema_id
