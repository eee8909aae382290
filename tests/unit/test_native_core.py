"""The compiled core (``worker._native``) equals the Python reference, as properties.

Batches of send requests over every channel, category, address shape, fact
combination and settings history, some written with an older writer schema
and some not decodable at all, are run through the reference (codec, policy,
addressing, fastavro) and through the core. Both must name the same facts at
the same Redis keys and fields, pack the same read, and answer the same
decisions, reasons, details, bypasses, SuppressedSend bytes, dead letters and
tallies.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.native_reference import (
    OLD_SEND_ID,
    RecordingFallback,
    core_batch,
    encode_with,
    make_codec,
    make_settings,
    older_send_request_schema,
    reference_batch,
)
from worker.models import OrgSettings, UnsubscribeScope, UserOptOutScope
from worker.policy.decision import DecisionPolicy
from worker.policy.facts import FactKind, SettingsChange, SettingsHistory, Unsubscribe, encode_unsubscribes

CODEC = make_codec()
OLD_SCHEMA = older_send_request_schema()
NOW = 1_700_000_100_000

ORGS = ("o1", "o2", "ö3")
USERS = ("u1", "u2")
CONTACTS = ("c1", "c2", "c3")
EMAILS = (
    "ann@example.com",
    "  Ann@Example.COM ",
    "ann+news@example.com",
    "bob@bücher.de",
    "Bob@XN--BCHER-KVA.de",
    "jo.é@example.com",
    "a" * 65 + "@example.com",
    "x@a.test",
    "x@a--b.com",
    "x@1.com",
    "not-an-address",
    "",
    "a@b",
    "\x1cann@example.com\u00a0",
)
SENDERS = ("officer@acme.com", "Officer@XN--BCHER-KVA.de", "officer@bücher.de", "officer@other.com", "bad sender", "")
PHONES = (
    "+12025550101",
    " +12025550102 ",
    "(202) 555-0101",
    "202.555.0103",
    "+442071234567",
    "+1202555010",
    "555-0123",
    "garbage",
    "",
    "+１２０２５５５０１０１",
)
SMS_FROM = ("55555", "+12025550199", "")
DOMAINS = ("", "acme.com", "xn--bcher-kva.de", "other.com")

# Stored values: what the applier writes, and some it never writes (the decoders must agree on those too).
FLAG_VALUES = ("1", "", "0", "yes")
STAMPED_VALUES = ("1|100|e1", "0|100|e1", "1|5|e|x", "1|x|e", "1", "0", "", "1| 7|e", "1|+8|e", "1|1_0|e", "1|٣|e", "1|-0|e", "1|007|e")
SMS_VALUES = ("out", "100|", "|150", "200|150", "100|200", "", "|", "x|", "100", "1|2|3", " 12|", "|1_5", "٣|", "-5|", "007|")


@st.composite
def history(draw: st.DrawFn) -> str:
    changes = draw(
        st.lists(
            st.tuples(
                st.integers(0, 300),
                st.sampled_from(("s1", "s2", "s3")),
                st.sampled_from(list(UnsubscribeScope)),
                st.sampled_from(list(UserOptOutScope)),
            ),
            max_size=4,
        )
    )
    return SettingsHistory(tuple(SettingsChange(at, e, OrgSettings(u, o)) for at, e, u, o in changes)).encode()


@st.composite
def unsubscribes(draw: st.DrawFn) -> str:
    found = draw(st.lists(st.tuples(st.sampled_from(DOMAINS), st.integers(0, 300)), max_size=4))
    return encode_unsubscribes(tuple(Unsubscribe(domain, at) for domain, at in found))


def value_strategy(kind: FactKind) -> st.SearchStrategy[str]:
    if kind == FactKind.SMS_CONSENT:
        return st.sampled_from(SMS_VALUES)
    if kind in (FactKind.SILENCED, FactKind.OK_TO_EMAIL):
        return st.sampled_from(STAMPED_VALUES)
    if kind == FactKind.ORG_SETTINGS:
        return history()
    if kind == FactKind.EMAIL_UNSUBSCRIBES:
        return unsubscribes()
    return st.sampled_from(FLAG_VALUES)


@st.composite
def send_record(draw: st.DrawFn) -> dict[str, Any]:
    channel = draw(st.sampled_from(("EMAIL", "SMS")))
    return {
        "message_id": draw(st.sampled_from(("m1", "m-é", ""))),
        "org_id": draw(st.sampled_from(ORGS)),
        "user_id": draw(st.sampled_from(USERS)),
        "contact_id": draw(st.sampled_from(CONTACTS)),
        "channel": channel,
        "category": draw(st.sampled_from(("MARKETING", "TRANSACTIONAL"))),
        # The common shapes first, so that many requests get past row 1.
        "to": draw(st.sampled_from(EMAILS[:3] * 4 + EMAILS if channel == "EMAIL" else PHONES[:2] * 4 + PHONES)),
        "from": draw(st.sampled_from(SENDERS[:1] * 4 + SENDERS if channel == "EMAIL" else SMS_FROM)),
        "requested_at": draw(st.integers(NOW - 10_000, NOW + 1_000)),
        "campaign_id": draw(st.none() | st.sampled_from(("camp", "ç"))),
        "payload": draw(st.none() | st.binary(max_size=8)),
        "attributes": draw(st.dictionaries(st.sampled_from(("k", "ключ")), st.text(max_size=3), max_size=2)),
    }


@st.composite
def send_value(draw: st.DrawFn) -> bytes | None:
    record = draw(send_record())
    shape = draw(
        st.sampled_from(
            ("ours",) * 16 + ("older", "garbage", "truncated", "none", "trailing", "sized-map", "two-blocks", "repeated-key", "overlong")
        )
    )
    if shape == "older":
        record = {k: v for k, v in record.items() if k not in ("campaign_id", "payload", "attributes")}
        return encode_with(OLD_SEND_ID, OLD_SCHEMA, record)
    value = CODEC.encode("SendRequest", record)
    if shape == "garbage":
        return draw(st.sampled_from((b"", b"\x07abc", b"\x00\x00", b"\x00\x00\x00\x00\x63xyz"))) + draw(st.binary(max_size=4))
    if shape == "truncated":
        return value[: draw(st.integers(5, len(value) - 1))]
    if shape == "trailing":
        return value + b"\x00"
    if shape == "none":
        return None
    if shape == "sized-map":
        # The attributes map as one block with its byte size ({"k": "v"}): the core
        # declines it and fastavro reads it; a SuppressedSend still embeds the body.
        value = CODEC.encode("SendRequest", {**record, "attributes": {}})
        return value[:-1] + b"\x01\x08\x02k\x02v\x00"
    # Valid Avro that fastavro would write otherwise: the core leaves these to fastavro too,
    # so the SuppressedSend is fastavro's encoding of the decoded request.
    if shape == "two-blocks":
        value = CODEC.encode("SendRequest", {**record, "attributes": {}})
        return value[:-1] + b"\x02\x02k\x02v\x02\x02j\x02w\x00"
    if shape == "repeated-key":
        value = CODEC.encode("SendRequest", {**record, "attributes": {}})
        return value[:-1] + b"\x04\x02k\x02v\x02k\x02w\x00"
    if shape == "overlong" and value[5] < 0x80:
        return value[:5] + bytes([value[5] | 0x80, 0]) + value[6:]
    return value


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[bytes | None], dict, Any]:
    values = draw(st.lists(send_value(), min_size=1, max_size=12))
    configured = make_settings(
        secret=draw(st.sampled_from(("s3cret", "another-secret-é"))),
        buckets=draw(st.sampled_from((1, 8, 1024))),
        shards=draw(st.sampled_from((1, 3, 16, 1000))),
    )
    policy = DecisionPolicy()
    keys = []
    for value in values:
        try:
            keys.extend(policy.prepare(CODEC.decode_send_head(value)).keys)  # type: ignore[arg-type]
        except Exception:
            continue
    facts = {}
    for key in dict.fromkeys(keys):
        if draw(st.integers(0, 2)) == 0:  # most facts absent, as in a real store
            facts[key] = draw(value_strategy(key.kind))
    return values, facts, configured


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario())
def test_core_equals_the_reference(case: tuple[list[bytes | None], dict, Any]) -> None:
    values, facts, configured = case
    expected = reference_batch(values, facts, codec=CODEC, settings=configured, now_ms=NOW)
    actual = core_batch(values, facts, codec=CODEC, settings=configured, now_ms=NOW)
    assert actual.poison == expected.poison
    assert actual.prepared == expected.prepared
    assert actual.read_keys == expected.read_keys
    assert actual.read_fields == expected.read_fields
    assert actual.verdicts == expected.verdicts
    assert actual.suppressed == expected.suppressed
    assert actual.decisions == expected.decisions
    assert actual.bypasses == expected.bypasses


def test_the_properties_reach_every_outcome() -> None:
    """The generators above are not vacuous: a fixed batch reaches bypasses, suppressions, fallbacks and poison."""
    records = [
        {"channel": "EMAIL", "category": "TRANSACTIONAL", "to": "ann@example.com", "from": "officer@acme.com"},
        {"channel": "EMAIL", "category": "MARKETING", "to": "bob@bücher.de", "from": "officer@acme.com"},
        {"channel": "SMS", "category": "MARKETING", "to": "(202) 555-0101", "from": "55555"},
        {"channel": "SMS", "category": "MARKETING", "to": "+12025550102", "from": "55555"},
    ]
    base = {"message_id": "m", "org_id": "o1", "user_id": "u1", "contact_id": "c1", "requested_at": NOW - 5}
    values: list[bytes | None] = [CODEC.encode("SendRequest", {**base, **r}) for r in records]
    values += [None, encode_with(OLD_SEND_ID, OLD_SCHEMA, {**base, **records[1]})]
    policy = DecisionPolicy()
    facts = {}
    for value in values[:4]:
        for key in policy.prepare(CODEC.decode_send_head(value)).keys:  # type: ignore[arg-type]
            if key.kind in (FactKind.EMAIL_OPT_OUT_ORGANIZATION, FactKind.SMS_CONSENT):
                facts[key] = "1" if key.kind == FactKind.EMAIL_OPT_OUT_ORGANIZATION else "|150"
    configured = make_settings()
    fallback = RecordingFallback(codec=CODEC, default_phone_region="US")
    actual = core_batch(values, facts, codec=CODEC, settings=configured, now_ms=NOW, fallback=fallback)
    expected = reference_batch(values, facts, codec=CODEC, settings=configured, now_ms=NOW)
    assert actual.verdicts == expected.verdicts
    assert actual.suppressed == expected.suppressed
    assert actual.verdicts[0] == ([], {}, ["EMAIL_OPT_OUT_ORGANIZATION"])
    assert actual.verdicts[2][0] == ["SMS_NOT_OPTED_IN"] and actual.verdicts[2][1]["SMS_NOT_OPTED_IN"] == "sms_consent=none opt-out@150"
    assert actual.verdicts[5][0] == ["EMAIL_OPT_OUT_ORGANIZATION"]  # the older writer's request, decoded by fastavro
    assert [p[:2] for p in actual.poison] == [(4, "empty-value")]
    # Only the unusual shapes were handed to the Python libraries.
    assert fallback.heads == 2  # the None and the older writer's value
    assert fallback.emails == ["bob@bücher.de", "bob@bücher.de"]
    assert fallback.phones == ["(202) 555-0101"]


