"""The Avro codec: round trips, int times, typed decode errors, schema evolution, fuzz."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import struct

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.avro_strategies import mutated as _mutated
from tests.unit.avro_strategies import requests as _requests
from tests.unit.avro_strategies import text as _text
from worker.codec import (
    FIXED_SCHEMA_IDS,
    RECORD_NAMES,
    AvroCodec,
    BadMagicByte,
    DecodeError,
    EmptyValue,
    EncodeError,
    MalformedAvro,
    SchemaMismatch,
    TruncatedValue,
    UnknownRecordName,
    UnknownSchemaId,
)
from worker.codec.schemas import schema_dir, strip_logical_types
from worker.config import Settings
from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    PreferenceSource,
    SendHead,
    SendRequest,
    SuppressionReason,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.preferences.core import build_applier_core

T0 = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z: millisecond precision must survive

SEND_REQUEST = SendRequest(
    message_id="m-1",
    org_id="org-1",
    user_id="user-1",
    contact_id="contact-1",
    channel=Channel.EMAIL,
    category=Category.MARKETING,
    to="Ann+News@Example.COM",
    from_="loans@lender.example",
    requested_at=T0,
    campaign_id="spring",
    payload=b"\x00\xffbody",
    attributes={"template": "t-7", "locale": "de-DE"},
).to_record()

PREFERENCE_EVENT = PreferenceEvent(
    event_id="e-1",
    org_id="org-1",
    occurred_at=T0 + 1,
    source=PreferenceSource.API,
    type=PreferenceEventType.ORG_SETTINGS_CHANGED,
    settings=OrgSettings(UnsubscribeScope.ORGANIZATION, UserOptOutScope.ORGANIZATION),
).to_record()

SUPPRESSED_SEND = {
    "request": SEND_REQUEST,
    "reasons": ["SILENCED", "EMAIL_OPT_OUT_DOMAIN"],
    "primary_reason": "SILENCED",
    "details": {"silenced_at": str(T0)},
    "decided_at": T0 + 2,
    "policy_version": "2026-11-1",
    "gate_instance": "gate-a",
}

REJECTED_EVENT = {
    "event": PreferenceEvent(
        event_id="e-2",
        org_id="org-1",
        occurred_at=T0 + 3,
        source=PreferenceSource.USER,
        type=PreferenceEventType.CONTACT_OK_TO_EMAIL_SET,
        contact_id="contact-1",
        ok_to_email=False,
    ).to_record(),
    "raw": None,
    "reason": "SOURCE_NOT_ALLOWED",
    "detail": "ok-to-email only from API or IMPORT",
    "rejected_at": T0 + 4,
}

REJECTED_UNDECODABLE = {
    "event": None,
    "raw": b"\x07garbage",
    "reason": "UNDECODABLE",
    "detail": "bad-magic-byte",
    "rejected_at": T0 + 5,
}

RECORDS = {
    "SendRequest": SEND_REQUEST,
    "PreferenceEvent": PREFERENCE_EVENT,
    "SuppressedSend": SUPPRESSED_SEND,
    "RejectedPreferenceEvent": REJECTED_EVENT,
}

TIME_FIELDS = {
    "SendRequest": ["requested_at"],
    "PreferenceEvent": ["occurred_at"],
    "SuppressedSend": ["decided_at"],
    "RejectedPreferenceEvent": ["rejected_at"],
}


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


def _avsc(name: str) -> dict:
    return json.loads((schema_dir() / f"{name}.avsc").read_text())


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_round_trip(codec: AvroCodec, name: str) -> None:
    value = codec.encode(name, RECORDS[name])
    assert value[0] == 0
    assert struct.unpack(">I", value[1:5])[0] == FIXED_SCHEMA_IDS[name] == codec.schema_id(name)
    assert codec.decode(name, value) == RECORDS[name]


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_times_are_int_epoch_millis(codec: AvroCodec, name: str) -> None:
    decoded = codec.decode(name, codec.encode(name, RECORDS[name]))
    for time_field in TIME_FIELDS[name]:
        assert type(decoded[time_field]) is int
        assert decoded[time_field] == RECORDS[name][time_field]


def test_embedded_times_are_int(codec: AvroCodec) -> None:
    decoded = codec.decode("SuppressedSend", codec.encode("SuppressedSend", SUPPRESSED_SEND))
    assert type(decoded["request"]["requested_at"]) is int
    decoded = codec.decode("RejectedPreferenceEvent", codec.encode("RejectedPreferenceEvent", REJECTED_EVENT))
    assert type(decoded["event"]["occurred_at"]) is int


def test_round_trip_undecodable_rejection_and_minimal_request(codec: AvroCodec) -> None:
    value = codec.encode("RejectedPreferenceEvent", REJECTED_UNDECODABLE)
    assert codec.decode("RejectedPreferenceEvent", value) == REJECTED_UNDECODABLE
    minimal = {key: SEND_REQUEST[key] for key in list(SEND_REQUEST)[:9]}
    decoded = codec.decode("SendRequest", codec.encode("SendRequest", minimal))
    assert decoded == {**minimal, "campaign_id": None, "payload": None, "attributes": {}}


def test_models_round_trip(codec: AvroCodec) -> None:
    request = SendRequest.from_record(codec.decode("SendRequest", codec.encode("SendRequest", SEND_REQUEST)))
    assert request.to_record() == SEND_REQUEST
    event = PreferenceEvent.from_record(
        codec.decode("PreferenceEvent", codec.encode("PreferenceEvent", PREFERENCE_EVENT))
    )
    assert event.settings == OrgSettings(UnsubscribeScope.ORGANIZATION, UserOptOutScope.ORGANIZATION)


def test_decode_accepts_bytearray_and_memoryview(codec: AvroCodec) -> None:
    value = codec.encode("SendRequest", SEND_REQUEST)
    assert codec.decode("SendRequest", bytearray(value)) == SEND_REQUEST
    assert codec.decode("SendRequest", memoryview(value)) == SEND_REQUEST


# --- the .avsc files ---------------------------------------------------------------------


def test_schema_files_follow_spec() -> None:
    send_request = _avsc("SendRequest")
    assert send_request["namespace"] == "sendgate"
    assert [f["name"] for f in send_request["fields"]] == [
        "message_id", "org_id", "user_id", "contact_id", "channel", "category",
        "to", "from", "requested_at", "campaign_id", "payload", "attributes",
    ]  # fmt: skip
    fields = {f["name"]: f for f in send_request["fields"]}
    assert fields["requested_at"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["campaign_id"]["type"] == ["null", "string"] and fields["campaign_id"]["default"] is None
    assert fields["attributes"]["default"] == {}
    event_fields = {f["name"]: f for f in _avsc("PreferenceEvent")["fields"]}
    assert event_fields["type"]["type"]["symbols"] == [t.value for t in PreferenceEventType]
    suppressed = {f["name"]: f for f in _avsc("SuppressedSend")["fields"]}
    assert suppressed["reasons"]["type"]["items"]["symbols"] == [
        "INVALID_ADDRESS", "DO_NOT_CONTACT", "SILENCED", "EMAIL_OPT_OUT_ORGANIZATION", "EMAIL_OPT_OUT_DOMAIN",
        "EMAIL_OPT_OUT_USER", "OK_TO_EMAIL_FALSE", "SMS_OPT_OUT", "SMS_NOT_OPTED_IN",
    ]  # fmt: skip
    rejected = {f["name"]: f for f in _avsc("RejectedPreferenceEvent")["fields"]}
    assert rejected["reason"]["type"]["symbols"] == [
        "IRREVERSIBLE", "SMS_NOT_OPTED_IN", "SOURCE_NOT_ALLOWED", "MISSING_FIELD", "INVALID_ADDRESS", "UNDECODABLE",
    ]  # fmt: skip
    for name in RECORD_NAMES:
        schema = _avsc(name)
        assert schema["name"] == name and schema["doc"]
        assert all(f.get("doc") for f in schema["fields"])


def test_embedded_records_match_their_own_files() -> None:
    # The files are self-contained, so the inlined copies must not drift from the originals.
    request = {f["name"]: f for f in _avsc("SuppressedSend")["fields"]}["request"]["type"]
    assert request == {k: v for k, v in _avsc("SendRequest").items() if k != "namespace"}
    event = {f["name"]: f for f in _avsc("RejectedPreferenceEvent")["fields"]}["event"]["type"][1]
    assert event == {k: v for k, v in _avsc("PreferenceEvent").items() if k != "namespace"}


# --- typed decode errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, EmptyValue),
        (b"", EmptyValue),
        (b"\x01\x00\x00\x00\x01abc", BadMagicByte),
        (b"{\"json\": true}", BadMagicByte),
        (b"\x00", TruncatedValue),
        (b"\x00\x00\x00\x01", TruncatedValue),
        (b"\x00\x00\x00\x00\x01", TruncatedValue),  # header only, no body
        (b"\x00\x00\x00\x00\x63" + b"\x02a" * 10, UnknownSchemaId),
        (b"\x00\x00\x00\x00\x01" + b"\xff" * 12, TruncatedValue),  # a varint that never ends
        (b"\x00\x00\x00\x00\x01\x04\xff\xfe" + b"\x02a" * 8, MalformedAvro),  # invalid UTF-8
        (b"\x00\x00\x00\x00\x01\x03abc", TruncatedValue),  # negative length: fastavro reads to the end
    ],
)
def test_bad_values_raise_typed_errors(codec: AvroCodec, value: bytes | None, error: type[DecodeError]) -> None:
    with pytest.raises(error) as caught:
        codec.decode("SendRequest", value)
    assert isinstance(caught.value, DecodeError)
    assert caught.value.error_class  # the dead-letter header value


def test_error_classes_are_distinct_and_short() -> None:
    classes = [EmptyValue, BadMagicByte, TruncatedValue, MalformedAvro, UnknownSchemaId, SchemaMismatch]
    names = [cls.error_class for cls in classes]
    assert len(set(names)) == len(names)
    assert all(len(name) <= 24 and " " not in name for name in names)


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_every_truncation_is_a_typed_error(codec: AvroCodec, name: str) -> None:
    value = codec.encode(name, RECORDS[name])
    for cut in range(len(value)):
        with pytest.raises(DecodeError):
            codec.decode(name, value[:cut])
    # The last bytes are the end of the body: cutting them is TruncatedValue specifically.
    with pytest.raises(TruncatedValue):
        codec.decode(name, value[:-1])


def test_trailing_bytes_are_malformed(codec: AvroCodec) -> None:
    with pytest.raises(MalformedAvro):
        codec.decode("SendRequest", codec.encode("SendRequest", SEND_REQUEST) + b"\x00")


def test_invalid_utf8_is_malformed_and_not_quoted(codec: AvroCodec) -> None:
    value = codec.encode("SendRequest", {**SEND_REQUEST, "message_id": "ab"})
    broken = value[:6] + b"\xff\xfe" + value[8:]  # message_id's two characters
    with pytest.raises(MalformedAvro) as caught:
        codec.decode("SendRequest", broken)
    assert "\\xff" not in str(caught.value)


def test_enum_index_out_of_range_is_malformed(codec: AvroCodec) -> None:
    value = codec.encode("SendRequest", {**SEND_REQUEST, "message_id": "m", "org_id": "o", "user_id": "u",
                                         "contact_id": "c"})  # fmt: skip
    channel_at = 5 + 4 * 2  # header + four one-character strings
    assert value[channel_at] == 0  # EMAIL
    with pytest.raises(MalformedAvro):
        codec.decode("SendRequest", value[:channel_at] + b"\x14" + value[channel_at + 1 :])


def test_record_of_another_type_is_schema_mismatch(codec: AvroCodec) -> None:
    with pytest.raises(SchemaMismatch):
        codec.decode("PreferenceEvent", codec.encode("SendRequest", SEND_REQUEST))


def test_unknown_record_name(codec: AvroCodec) -> None:
    with pytest.raises(UnknownRecordName):
        codec.encode("Nope", {})
    with pytest.raises(UnknownRecordName):
        codec.schema_id("Nope")


@pytest.mark.parametrize(
    "record",
    [
        {"message_id": "m"},  # required fields missing
        {**SEND_REQUEST, "channel": "FAX"},
        {**SEND_REQUEST, "requested_at": "yesterday"},
    ],
)
def test_encode_errors_are_typed(codec: AvroCodec, record: dict) -> None:
    with pytest.raises(EncodeError):
        codec.encode("SendRequest", record)


# --- schema evolution --------------------------------------------------------------------


def _older_send_request_schema() -> dict:
    """SendRequest as a first version might have had it: no campaign_id, payload, attributes."""
    schema = copy.deepcopy(_avsc("SendRequest"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in ("campaign_id", "payload", "attributes")]
    return schema


def _encode_with(schema_id: int, schema: dict, record: dict) -> bytes:
    """A value as an old producer would have written it with ``schema`` under ``schema_id``."""
    buffer = io.BytesIO()
    buffer.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(strip_logical_types(schema)), record)
    return buffer.getvalue()


def test_older_writer_schema_resolves_with_defaults() -> None:
    codec = AvroCodec()
    old = {key: value for key, value in SEND_REQUEST.items() if key not in ("campaign_id", "payload", "attributes")}
    value = _encode_with(17, _older_send_request_schema(), old)
    with pytest.raises(UnknownSchemaId):
        codec.decode("SendRequest", value)
    codec.register_writer(17, "SendRequest", _older_send_request_schema())
    decoded = codec.decode("SendRequest", value)
    assert decoded == {**old, "campaign_id": None, "payload": None, "attributes": {}}
    assert type(decoded["requested_at"]) is int
    # Registered as JSON text works the same, and the current id is unaffected.
    codec.register_writer(18, "SendRequest", json.dumps(_older_send_request_schema()))
    assert codec.decode("SendRequest", b"\x00\x00\x00\x00\x12" + value[5:]) == decoded
    assert codec.decode("SendRequest", codec.encode("SendRequest", SEND_REQUEST)) == SEND_REQUEST


def test_writer_for_another_record_is_schema_mismatch() -> None:
    codec = AvroCodec()
    codec.register_writer(20, "PreferenceEvent", _avsc("PreferenceEvent"))
    with pytest.raises(SchemaMismatch):
        codec.decode("SendRequest", b"\x00\x00\x00\x00\x14" + codec.encode("SendRequest", SEND_REQUEST)[5:])
    with pytest.raises(ValueError):
        codec.register_writer(21, "SendRequest", _avsc("PreferenceEvent"))


def test_unresolvable_writer_is_schema_mismatch() -> None:
    codec = AvroCodec()
    incompatible = copy.deepcopy(_avsc("SendRequest"))
    incompatible["fields"][0]["type"] = "int"  # message_id: int cannot be read as string
    codec.register_writer(30, "SendRequest", incompatible)
    with pytest.raises(SchemaMismatch):
        codec.decode("SendRequest", b"\x00\x00\x00\x00\x1e\x02" + b"\x02a" * 3 + b"\x00\x00")


# --- registry mode (a fake source: no network in unit tests) -----------------------------


class FakeRegistry:
    """An in-memory schema registry: ids by schema text, subjects recorded."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, int] = {}
        self.fetches: list[int] = []

    def register(self, subject: str, schema_text: str) -> int:
        known = [schema_id for schema_id, text in self.schemas.items() if text == schema_text]
        schema_id = known[0] if known else 100 + len(self.schemas)
        self.schemas[schema_id] = schema_text
        self.subjects[subject] = schema_id
        return schema_id

    def fetch(self, schema_id: int) -> str | None:
        self.fetches.append(schema_id)
        return self.schemas.get(schema_id)


def test_registry_ids_and_writer_fetch() -> None:
    registry = FakeRegistry()
    codec = AvroCodec.from_settings(Settings(), source=registry)
    assert registry.subjects == {
        "sends.requested-value": codec.schema_id("SendRequest"),
        "preferences.changed-value": codec.schema_id("PreferenceEvent"),
        "sends.suppressed-value": codec.schema_id("SuppressedSend"),
        "preferences.rejected-value": codec.schema_id("RejectedPreferenceEvent"),
    }
    for name in RECORD_NAMES:
        assert codec.decode(name, codec.encode(name, RECORDS[name])) == RECORDS[name]
    assert registry.fetches == []  # our own ids never need a round trip

    old_id = registry.register("sends.requested-value", json.dumps(_older_send_request_schema()))
    old = {key: value for key, value in SEND_REQUEST.items() if key not in ("campaign_id", "payload", "attributes")}
    value = _encode_with(old_id, _older_send_request_schema(), old)
    for _ in range(3):
        assert codec.decode("SendRequest", value)["attributes"] == {}
    assert registry.fetches == [old_id]  # fetched once, then cached

    unknown = b"\x00\x00\x00\x27\x0f" + value[5:]
    for _ in range(3):
        with pytest.raises(UnknownSchemaId):
            codec.decode("SendRequest", unknown)
    assert registry.fetches == [old_id, 9999]  # misses are remembered too


def test_without_registry_ids_are_fixed() -> None:
    codec = AvroCodec.from_settings(Settings())
    assert {name: codec.schema_id(name) for name in RECORD_NAMES} == FIXED_SCHEMA_IDS


# --- fuzz --------------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(name=st.sampled_from(RECORD_NAMES), body=st.binary(max_size=200), schema_id=st.sampled_from([1, 2, 3, 4, 7]))
def test_random_bodies_raise_only_decode_errors(name: str, body: bytes, schema_id: int) -> None:
    codec = _FUZZ_CODEC
    with contextlib.suppress(DecodeError):
        codec.decode(name, b"\x00" + struct.pack(">I", schema_id) + body)


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(RECORD_NAMES), value=st.binary(max_size=64))
def test_random_values_raise_only_decode_errors(name: str, value: bytes) -> None:
    with contextlib.suppress(DecodeError):
        _FUZZ_CODEC.decode(name, value)


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(RECORD_NAMES), data=st.data())
def test_mutated_valid_values_raise_only_decode_errors(name: str, data: st.DataObject) -> None:
    value = bytearray(_FUZZ_CODEC.encode(name, RECORDS[name]))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(5, len(value) - 1))
        value[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        _FUZZ_CODEC.decode(name, bytes(value))


_FUZZ_CODEC = AvroCodec()


# --- SendRequest heads (the reference the gate's core falls back on; the core's own
# reader is fuzzed against fastavro in test_native_avro.py) ------------------------------

@pytest.mark.parametrize(
    ("value", "error"),
    [(None, EmptyValue), (b"", EmptyValue), (b"\x01\x00\x00\x00\x01", BadMagicByte), (b"\x00\x00", TruncatedValue)],
)
def test_send_head_header_errors(value: bytes | None, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        _FUZZ_CODEC.decode_send_head(value)


def test_send_head_of_an_older_writer_resolves_with_defaults() -> None:
    codec = AvroCodec()
    codec.register_writer(9, "SendRequest", _older_send_request_schema())
    record = {k: v for k, v in SEND_REQUEST.items() if k in {f["name"] for f in _older_send_request_schema()["fields"]}}
    value = _encode_with(9, _older_send_request_schema(), record)
    assert codec.decode_send_head(value) == SendHead.from_request(SendRequest.from_record(codec.decode("SendRequest", value)))


def test_send_head_of_a_map_in_sized_blocks() -> None:
    # A map block with a negative count (followed by its byte size), as other Avro writers may write.
    value = _FUZZ_CODEC.encode("SendRequest", {**SEND_REQUEST, "attributes": {"k": "v"}})
    assert value.endswith(b"\x02\x02k\x02v\x00")
    sized = value[: -len(b"\x02\x02k\x02v\x00")] + b"\x01\x08\x02k\x02v\x00"
    assert _FUZZ_CODEC.decode_send_head(sized) == _FUZZ_CODEC.decode_send_head(value)


# --- the applier core's PreferenceEvent reader against fastavro ----------------------------
# The core reads the values of our own writer schema itself and leaves everything else to
# the codec (fastavro): whatever it reads must be what fastavro reads.

_CORE = build_applier_core(Settings(), _FUZZ_CODEC)


def _event_reference(value: bytes) -> PreferenceEvent | tuple[type, str]:
    try:
        return PreferenceEvent.from_record(_FUZZ_CODEC.decode("PreferenceEvent", value))
    except DecodeError as exc:
        return type(exc), exc.error_class


def _event_fast(value: bytes) -> PreferenceEvent | tuple[type, str]:
    """The core's reading of ``value``; where it declines, the codec's (what the applier does)."""
    (read,) = _CORE.read([value])
    if read is None:
        try:
            return _FUZZ_CODEC.decode_preference_event(value)
        except DecodeError as exc:
            return type(exc), exc.error_class
    (event_id, org_id, occurred_at, source, kind), (email, phone, user_id, domain, contact_id, ok_to_email, settings) = read
    return PreferenceEvent(
        event_id=event_id, org_id=org_id, occurred_at=occurred_at, source=PreferenceSource(source), type=PreferenceEventType(kind),
        email=email, phone=phone, user_id=user_id, domain=domain, contact_id=contact_id, ok_to_email=ok_to_email,
        settings=None if settings is None else OrgSettings(UnsubscribeScope(settings[0]), UserOptOutScope(settings[1])),
    )


_optional_text = st.none() | _text
_events = st.builds(
    PreferenceEvent,
    event_id=_text,
    org_id=_text,
    occurred_at=st.integers(-(2**62), 2**62 - 1),
    source=st.sampled_from(list(PreferenceSource)),
    type=st.sampled_from(list(PreferenceEventType)),
    email=_optional_text,
    phone=_optional_text,
    user_id=_optional_text,
    domain=_optional_text,
    contact_id=_optional_text,
    ok_to_email=st.none() | st.booleans(),
    settings=st.none() | st.builds(OrgSettings, st.sampled_from(list(UnsubscribeScope)), st.sampled_from(list(UserOptOutScope))),
)


@settings(max_examples=400, deadline=None)
@given(event=_events)
def test_preference_event_of_valid_values_is_fastavro_and_takes_the_fast_path(event: PreferenceEvent) -> None:
    value = _FUZZ_CODEC.encode("PreferenceEvent", event.to_record())
    assert _CORE.read([value])[0] is not None
    assert _event_fast(value) == _event_reference(value) == event


@settings(max_examples=150, deadline=None)
@given(event=_events)
def test_preference_event_rejects_every_truncation_and_trailing_bytes_like_fastavro(event: PreferenceEvent) -> None:
    value = _FUZZ_CODEC.encode("PreferenceEvent", event.to_record())
    for cut in range(len(value)):
        assert _event_fast(value[:cut]) == _event_reference(value[:cut])
    for tail in (b"\x00", b"\x02", b"\xff", b"garbage"):
        assert _event_fast(value + tail) == _event_reference(value + tail) == (MalformedAvro, "malformed-avro")


@settings(max_examples=1500, deadline=None)
@given(event=_events, data=st.data())
def test_preference_event_of_mutated_values_is_fastavro(event: PreferenceEvent, data: st.DataObject) -> None:
    value = _mutated(_FUZZ_CODEC.encode("PreferenceEvent", event.to_record()), data)
    assert _event_fast(value) == _event_reference(value)


@settings(max_examples=1500, deadline=None)
@given(body=st.binary(max_size=120), schema_id=st.sampled_from([1, 2, 3, 4, 7]))
def test_preference_event_of_random_bodies_is_fastavro(body: bytes, schema_id: int) -> None:
    value = b"\x00" + struct.pack(">I", schema_id) + body
    assert _event_fast(value) == _event_reference(value)


# --- SuppressedSend of a request value ------------------------------------------------------

_decisions = st.fixed_dictionaries(
    {
        "reasons": st.lists(st.sampled_from([r.value for r in SuppressionReason]), min_size=1, max_size=9, unique=True),
        "details": st.dictionaries(_text, _text, max_size=5),
        "decided_at": st.integers(-(2**63), 2**63 - 1),
        "policy_version": _text,
        "gate_instance": _text,
    }
)


def _suppressed_record(request_record: dict, decision: dict) -> dict:
    return {"request": request_record, "primary_reason": decision["reasons"][0], **decision}


@settings(max_examples=400, deadline=None)
@given(request=_requests, decision=_decisions)
def test_suppressed_send_holds_the_request_and_the_decision(request: SendRequest, decision: dict) -> None:
    value = _FUZZ_CODEC.encode("SendRequest", request.to_record())
    expected = _suppressed_record(request.to_record(), decision)
    encoded = _FUZZ_CODEC.encode_suppressed(value, {k: v for k, v in expected.items() if k != "request"})
    assert encoded == _FUZZ_CODEC.encode("SuppressedSend", expected)
    assert _FUZZ_CODEC.decode("SuppressedSend", encoded) == expected


def test_suppressed_send_of_an_older_writer_is_decoded_and_resolved() -> None:
    codec = AvroCodec()
    codec.register_writer(9, "SendRequest", _older_send_request_schema())
    old = {k: v for k, v in SEND_REQUEST.items() if k not in ("campaign_id", "payload", "attributes")}
    value = _encode_with(9, _older_send_request_schema(), old)
    decision = {"reasons": ["SILENCED"], "primary_reason": "SILENCED", "details": {"state": "g1"}, "decided_at": 5,
                "policy_version": "p", "gate_instance": "g"}
    spliced = codec.encode_suppressed(value, decision)
    assert codec.decode("SuppressedSend", spliced)["request"] == {**old, "campaign_id": None, "payload": None, "attributes": {}}


@pytest.mark.parametrize(
    ("value", "error"),
    [(b"", EmptyValue), (b"\x01\x00\x00\x00\x01", BadMagicByte), (b"\x00\x00\x00\x00\x63" + b"\x02", UnknownSchemaId)],
)
def test_suppressed_send_of_an_unreadable_request_raises_its_decode_error(value: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        _FUZZ_CODEC.encode_suppressed(
            value,
            {
                "reasons": ["SILENCED"],
                "primary_reason": "SILENCED",
                "details": {},
                "decided_at": 1,
                "policy_version": "p",
                "gate_instance": "g",
            },
        )
