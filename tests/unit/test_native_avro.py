"""The core's Avro reading and SuppressedSend writing against fastavro, on values of any content.

Valid requests of any text, bytes and times, their truncations, mutations and
random bodies go through the core and through the reference (fastavro and the
policy) with no facts held. Whatever the core accepts it must read as fastavro
does (the same dead letters, fact keys, details and SuppressedSend bytes), and
a request in fastavro's own form must be read by the core itself.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.avro_strategies import mutated, requests
from tests.unit.native_reference import RecordingFallback, core_batch, make_codec, make_settings, reference_batch
from worker.models import SendRequest

CODEC = make_codec()
SETTINGS = make_settings()
NOW = 1_700_000_000_000


def assert_core_equals_reference(values: list[bytes | None], fallback: RecordingFallback | None = None) -> None:
    expected = reference_batch(values, {}, codec=CODEC, settings=SETTINGS, now_ms=NOW)
    actual = core_batch(values, {}, codec=CODEC, settings=SETTINGS, now_ms=NOW, fallback=fallback)
    assert actual.poison == expected.poison
    assert actual.prepared == expected.prepared
    assert actual.verdicts == expected.verdicts
    assert actual.suppressed == expected.suppressed


@settings(max_examples=400, deadline=None)
@given(request=requests)
def test_valid_values_are_read_by_the_core_as_fastavro_reads_them(request: SendRequest) -> None:
    value = CODEC.encode("SendRequest", request.to_record())
    fallback = RecordingFallback(codec=CODEC, default_phone_region="US")
    assert_core_equals_reference([value], fallback)
    if -(2**62) <= request.requested_at < 2**62:  # longer varints are left to fastavro
        assert fallback.heads == 0, "a request in fastavro's own form is the core's to read"


@settings(max_examples=100, deadline=None)
@given(request=requests)
def test_every_truncation_and_trailing_byte_is_dead_lettered_like_fastavro(request: SendRequest) -> None:
    value = CODEC.encode("SendRequest", request.to_record())
    values: list[bytes | None] = [value[:cut] for cut in range(len(value))]
    values += [value + tail for tail in (b"\x00", b"\x02", b"\xff", b"garbage")]
    assert_core_equals_reference(values)


@settings(max_examples=1500, deadline=None)
@given(request=requests, data=st.data())
def test_mutated_values_are_read_like_fastavro(request: SendRequest, data: st.DataObject) -> None:
    assert_core_equals_reference([mutated(CODEC.encode("SendRequest", request.to_record()), data)])


@settings(max_examples=1500, deadline=None)
@given(body=st.binary(max_size=200), schema_id=st.sampled_from([1, 2, 3, 4, 7, 11]))
def test_random_bodies_are_read_like_fastavro(body: bytes, schema_id: int) -> None:
    assert_core_equals_reference([b"\x00" + struct.pack(">I", schema_id) + body])
