"""Hypothesis strategies for Avro values: send requests of any content, and mutated encodings."""

from __future__ import annotations

from hypothesis import strategies as st

from worker.models import Category, Channel, SendRequest

text = st.text(max_size=80)
requests = st.builds(
    SendRequest,
    message_id=text,
    org_id=text,
    user_id=text,
    contact_id=text,
    channel=st.sampled_from(list(Channel)),
    category=st.sampled_from(list(Category)),
    to=text,
    from_=text,
    requested_at=st.integers(-(2**63), 2**63 - 1),
    campaign_id=st.none() | text,
    payload=st.none() | st.binary(max_size=300),
    attributes=st.dictionaries(text, text, max_size=6),
)


def mutated(encoded: bytes, data: st.DataObject) -> bytes:
    """``encoded`` with a few body bytes overwritten and, sometimes, bytes inserted."""
    value = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(5, len(value) - 1))
        value[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        position = data.draw(st.integers(5, len(value)))
        value[position:position] = data.draw(st.binary(min_size=1, max_size=12))
    return bytes(value)
