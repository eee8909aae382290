"""A fast reader for the leading fields of a ``SendRequest`` written with our own schema.

The gate forwards an allowed request byte for byte, so to decide it only needs
the nine leading fields (``message_id`` .. ``requested_at``, in schema order at
the start of the Avro body). This reader takes those and then *validates* the
rest of the body (``campaign_id`` union, ``payload`` union, ``attributes`` map,
no trailing bytes) without building any object, so a value with a malformed tail
is still rejected.

It is deliberately a strict subset of the Avro decoder: on anything unusual (a
negative length, a varint of more than nine bytes, an unknown enum or union
index, a map written in sized blocks, invalid UTF-8, a truncated or over-long
body) it answers ``None`` and the caller decodes the value with fastavro, whose
answer (the record, or the typed ``DecodeError``) is the reference. So every
value this reader accepts is one fastavro accepts with the same field values,
and every value it declines gets exactly the answer it got before.
"""

from __future__ import annotations

from worker.codec.wire import HEADER_SIZE
from worker.models import Category, Channel, SendHead

_new = tuple.__new__
# Enum indexes as written (zig-zag): 0 -> first symbol, 2 -> second.
_CHANNELS = {0: Channel.EMAIL, 2: Channel.SMS}
_CATEGORIES = {0: Category.MARKETING, 2: Category.TRANSACTIONAL}
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


def read_send_head(value: bytes) -> SendHead | None:
    """The leading fields of a wire-format ``SendRequest`` value, or None when fastavro must decide.

    ``value`` must carry our own ``SendRequest`` schema id (the caller checks
    the header); the body is read from ``HEADER_SIZE``.
    """
    end = len(value)
    try:
        start, stop = _length(value, HEADER_SIZE)
        if stop > end:
            return None
        message_id = value[start:stop].decode()
        start, stop = _length(value, stop)
        if stop > end:
            return None
        org_id = value[start:stop].decode()
        start, stop = _length(value, stop)
        if stop > end:
            return None
        user_id = value[start:stop].decode()
        start, stop = _length(value, stop)
        if stop > end:
            return None
        contact_id = value[start:stop].decode()
        channel = _CHANNELS[value[stop]]
        category = _CATEGORIES[value[stop + 1]]
        start, stop = _length(value, stop + 2)
        if stop > end:
            return None
        to = value[start:stop].decode()
        start, stop = _length(value, stop)
        if stop > end:
            return None
        from_ = value[start:stop].decode()
        requested_at, pos = _varint(value, stop)
        # campaign_id: ["null", "string"]
        branch = value[pos]
        if branch == 2:
            start, pos = _length(value, pos + 1)
            if pos > end:
                return None
            value[start:pos].decode()
        elif branch == 0:
            pos += 1
        else:
            return None
        # payload: ["null", "bytes"]
        branch = value[pos]
        if branch == 2:
            _, pos = _length(value, pos + 1)
            if pos > end:
                return None
        elif branch == 0:
            pos += 1
        else:
            return None
        # attributes: map of string, in blocks of (count, entries), ended by 0.
        while True:
            count, pos = _varint(value, pos)
            if count == 0:
                break
            if count < 0:  # a block with its byte size: rare, let fastavro read it
                return None
            for _ in range(count):
                start, pos = _length(value, pos)
                if pos > end:
                    return None
                value[start:pos].decode()
                start, pos = _length(value, pos)
                if pos > end:
                    return None
                value[start:pos].decode()
        if pos != end:
            return None
    except (_Decline, IndexError, KeyError, UnicodeDecodeError):
        return None
    return _new(SendHead, (message_id, org_id, user_id, contact_id, channel, category, to, from_, requested_at))
