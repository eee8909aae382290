"""Reading consumed messages: headers and positions, typed once.

A message a consumer returned without an error always has a partition and an
offset; librdkafka's stubs say ``Optional`` because produced messages may not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from confluent_kafka import Message


def partition_offset(message: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed message."""
    partition, offset = message.partition(), message.offset()
    if partition is None or offset is None:
        raise ValueError("a message without a partition or offset was not consumed")
    return partition, offset


def next_offsets(messages: Iterable[Message]) -> dict[int, int]:
    """Per partition, the offset after the last of consumed ``messages``.

    A consumer returns each partition's messages in offset order, so the last
    one of a partition is its highest; one dict pass, not a call per message.
    """
    last = {message.partition(): message.offset() for message in messages}
    if None in last or None in last.values():
        raise ValueError("a message without a partition or offset was not consumed")
    return {cast(int, partition): cast(int, offset) + 1 for partition, offset in last.items()}


def header(message: Message, name: str) -> str | None:
    """The first header ``name`` as text ("" when it has no value), or ``None`` when absent."""
    for key, value in _header_items(message):
        if key == name:
            return value.decode(errors="replace") if value is not None else ""
    return None


def headers_text(message: Message) -> dict[str, str]:
    """Every header as text; the last one of a repeated name wins."""
    return {key: (value or b"").decode(errors="replace") for key, value in _header_items(message)}


def _header_items(message: Message) -> list[tuple[str, bytes | None]]:
    headers = message.headers()
    if headers is None:
        return []
    if isinstance(headers, dict):
        return [(key, _bytes(value)) for key, value in headers.items()]
    return [(key, _bytes(value)) for key, value in headers]


def _bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()
