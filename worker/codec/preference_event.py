"""A fast reader for ``PreferenceEvent`` values written with our own schema.

The applier decodes every event of the topic when it rebuilds the state, so
this builds the :class:`~worker.models.PreferenceEvent` straight from the bytes
instead of going through fastavro's dict and ``from_record``. It is a strict
subset of the Avro decoder: on anything unusual (a negative length, a varint of
more than nine bytes, an unknown enum or union index, invalid UTF-8, a truncated
or over-long body) it answers ``None`` and the caller decodes with fastavro,
whose answer (the event, or the typed ``DecodeError``) is the reference.
"""

from __future__ import annotations

import enum

from worker.codec.wire import HEADER_SIZE
from worker.models import (
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    PreferenceSource,
    UnsubscribeScope,
    UserOptOutScope,
)

_MAX_SHIFT = 56  # nine varint bytes: enough for any millisecond time or length


class _Decline(Exception):
    """Internal: the fast reader is not sure; fastavro decides."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint (``long``/``int``) at ``pos``: (value, position after it)."""
    byte = data[pos]
    pos += 1
    result = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if shift > _MAX_SHIFT:
            raise _Decline
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
    return (result >> 1) ^ -(result & 1), pos


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A string or bytes length: (start of the content, its end)."""
    byte = data[pos]
    if byte < 0x80:
        if byte & 1:  # negative
            raise _Decline
        start = pos + 1
        return start, start + (byte >> 1)
    size, start = _varint(data, pos)
    if size < 0:
        raise _Decline
    return start, start + size


def _symbols(enum_type: type[enum.Enum]) -> dict[int, object]:
    # Enum index i is written as the zig-zag varint 2i, one byte for these enums.
    return {2 * index: member for index, member in enumerate(enum_type)}


_SOURCES = _symbols(PreferenceSource)
_TYPES = _symbols(PreferenceEventType)
_UNSUBSCRIBE_SCOPES = _symbols(UnsubscribeScope)
_USER_OPT_OUT_SCOPES = _symbols(UserOptOutScope)
_BOOLEANS = {0: False, 1: True}


def _optional_string(value: bytes, pos: int, end: int) -> tuple[str | None, int]:
    branch = value[pos]
    if branch == 0:
        return None, pos + 1
    if branch != 2:
        raise _Decline
    start, stop = _length(value, pos + 1)
    if stop > end:
        raise _Decline
    return value[start:stop].decode(), stop


def read_preference_event(value: bytes) -> PreferenceEvent | None:
    """The event in a wire-format ``PreferenceEvent`` value of our own schema id, or None when fastavro must decide."""
    end = len(value)
    try:
        start, stop = _length(value, HEADER_SIZE)
        if stop > end:
            return None
        event_id = value[start:stop].decode()
        start, stop = _length(value, stop)
        if stop > end:
            return None
        org_id = value[start:stop].decode()
        occurred_at, pos = _varint(value, stop)
        source = _SOURCES[value[pos]]
        kind = _TYPES[value[pos + 1]]
        email, pos = _optional_string(value, pos + 2, end)
        phone, pos = _optional_string(value, pos, end)
        user_id, pos = _optional_string(value, pos, end)
        domain, pos = _optional_string(value, pos, end)
        contact_id, pos = _optional_string(value, pos, end)
        branch = value[pos]
        if branch == 0:
            ok_to_email = None
            pos += 1
        elif branch == 2:
            ok_to_email = _BOOLEANS[value[pos + 1]]
            pos += 2
        else:
            return None
        branch = value[pos]
        if branch == 0:
            settings = None
            pos += 1
        elif branch == 2:
            settings = OrgSettings(_UNSUBSCRIBE_SCOPES[value[pos + 1]], _USER_OPT_OUT_SCOPES[value[pos + 2]])  # type: ignore[arg-type]
            pos += 3
        else:
            return None
        if pos != end:
            return None
    except (_Decline, IndexError, KeyError, UnicodeDecodeError):
        return None
    return PreferenceEvent(
        event_id=event_id,
        org_id=org_id,
        occurred_at=occurred_at,
        source=source,  # type: ignore[arg-type]
        type=kind,  # type: ignore[arg-type]
        email=email,
        phone=phone,
        user_id=user_id,
        domain=domain,
        contact_id=contact_id,
        ok_to_email=ok_to_email,
        settings=settings,
    )
