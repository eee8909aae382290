"""The applier's compiled core equals the Python reference (``PreferenceBatch`` on ``FactAddressing``).

A batch of preference-event values (every type, well and badly formed, our
writer schema and an older one, undecodable ones) is applied on a store that
already holds facts (values the applier writes, and some it never writes) by
both sides. They must leave the same Redis hashes, fields and values, reject
the same events with the same reasons and details, count the same tallies
and miskeyed events, and ask the Python libraries only about what the core
is not sure of. Where the reference raises on a stored value the applier
never writes, the core raises too.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.native_reference import encode_with, make_settings, read_script, redis_layout
from tests.unit.test_codec import _events
from tests.unit.test_native_core import FLAG_VALUES, SMS_VALUES, STAMPED_VALUES, history, unsubscribes
from worker.codec import AvroCodec
from worker.codec.errors import DecodeError
from worker.codec.schemas import schema_dir
from worker.config import Settings
from worker.models import OrgSettings, PreferenceEvent, PreferenceSource, UnsubscribeScope, UserOptOutScope
from worker.models import PreferenceEventType as T
from worker.policy.event_keys import kafka_key
from worker.policy.events import PreferenceBatch, PreferenceRules
from worker.policy.facts import FactKey, FactKind
from worker.preferences.core import ApplierFallback, build_applier_core, describe_error
from worker.state.addressing import FIELD_BYTES, FactAddressing
from worker.state.store import PackedWrites

OLD_EVENT_ID = 12


def older_event_schema() -> dict[str, Any]:
    """PreferenceEvent as a first version might have had it: no ok_to_email, no settings."""
    schema = json.loads((schema_dir() / "PreferenceEvent.avsc").read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in ("ok_to_email", "settings")]
    return schema


OLD_SCHEMA = older_event_schema()
CODEC = AvroCodec()
CODEC.register_writer(OLD_EVENT_ID, "PreferenceEvent", OLD_SCHEMA)

ORGS = ("o1", "o2", "ö3", "", " ")
EVENT_IDS = ("e1", "e2", "e3", "é|4")
USERS = ("u1", "u2", "", None)
CONTACTS = ("c1", "c2", "", "\u3000", None)
EMAILS = (
    "ann@example.com",
    "  Ann@Example.COM ",
    "ann+news@example.com",
    "bob@bücher.de",
    "Bob@XN--BCHER-KVA.de",
    "x@a.test",
    "not-an-address",
    "",
    "\x1cann@example.com\u00a0",
    None,
)
PHONES = (
    "+12025550101", " +12025550102 ", "(202) 555-0101", "+442071234567", "+1202555010", "garbage", "",
    "+１２０２５５５０１０１", None,
)
DOMAINS = ("acme.com", " Acme.COM ", "bücher.de", "xn--bcher-kva.de", "a@b", "a--b.com", "", " ", None)


class RecordingFallback(ApplierFallback):
    """The reference fallback, remembering what the core asked it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asked: list[tuple[str, str]] = []
        self.decoded = 0

    def decode_event(self, value: Any) -> PreferenceEvent | tuple[str, str]:
        self.decoded += 1
        return super().decode_event(value)

    def normalize_email(self, raw: str) -> str | None:
        self.asked.append(("email", raw))
        return super().normalize_email(raw)

    def normalize_phone(self, raw: str) -> str | None:
        self.asked.append(("phone", raw))
        return super().normalize_phone(raw)

    def normalize_domain(self, raw: str) -> str | None:
        self.asked.append(("domain", raw))
        return super().normalize_domain(raw)


@st.composite
def event_record(draw: st.DrawFn) -> dict[str, Any]:
    # SMS events often, so that numbers opt in and out within a batch; the plain shapes
    # of each field often, so that most events get past validation.
    kind = draw(st.sampled_from(list(T) + [T.SMS_OPT_IN, T.SMS_OPT_OUT] * 3))

    def optional(values: tuple[Any, ...]) -> Any:
        return draw(st.sampled_from(values[:2] * 6 + values))

    scopes = st.builds(OrgSettings, st.sampled_from(list(UnsubscribeScope)), st.sampled_from(list(UserOptOutScope)))
    settings_value = draw(st.none() | scopes | scopes | scopes)
    return PreferenceEvent(
        event_id=draw(st.sampled_from(EVENT_IDS)),
        org_id=draw(st.sampled_from(ORGS[:3] * 4 + ORGS)),
        occurred_at=draw(st.integers(0, 300)),
        source=draw(st.sampled_from(list(PreferenceSource) + [PreferenceSource.API, PreferenceSource.IMPORT] * 2)),
        type=kind,
        email=optional(EMAILS),
        phone=optional(PHONES),
        user_id=optional(USERS),
        domain=optional(DOMAINS),
        contact_id=optional(CONTACTS),
        ok_to_email=draw(st.none() | st.booleans() | st.booleans()),
        settings=settings_value,
    ).to_record()


@st.composite
def event_value(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    """A value and its Kafka key (the normalised subject, or not)."""
    record = draw(event_record())
    shape = draw(st.sampled_from(("ours",) * 12 + ("older", "garbage", "truncated", "none", "trailing", "overlong", "bad-enum")))
    value: bytes | None
    if shape == "older":
        value = encode_with(OLD_EVENT_ID, OLD_SCHEMA, {k: v for k, v in record.items() if k not in ("ok_to_email", "settings")})
    else:
        value = CODEC.encode("PreferenceEvent", record)
        if shape == "garbage":
            value = draw(st.sampled_from((b"", b"\x07abc", b"\x00\x00", b"\x00\x00\x00\x00\x63xyz"))) + draw(st.binary(max_size=4))
        elif shape == "truncated":
            value = value[: draw(st.integers(5, len(value) - 1))]
        elif shape == "trailing":
            value = value + b"\x00"
        elif shape == "none":
            value = None
        elif shape == "overlong" and value[5] < 0x80:
            value = value[:5] + bytes([value[5] | 0x80, 0]) + value[6:]
        elif shape == "bad-enum":
            at = 5 + 1 + value[5] // 2  # after event_id (one-byte length)
            value = value[:at] + b"\x7f" + value[at + 1 :] if at < len(value) else value
    key_shape = draw(st.sampled_from(("subject", "subject", "other", "none")))
    key: bytes | None = None
    if key_shape == "subject":
        event = PreferenceEvent.from_record(record)
        key = kafka_key(event).encode()
    elif key_shape == "other":
        key = b"o1:someone-else"
    return value, key


def value_strategy(kind: FactKind) -> st.SearchStrategy[str]:
    if kind == FactKind.SMS_CONSENT:
        return st.sampled_from(SMS_VALUES)
    if kind in (FactKind.SILENCED, FactKind.OK_TO_EMAIL):
        return st.sampled_from((*STAMPED_VALUES, "1|100|é|4"))
    if kind == FactKind.ORG_SETTINGS:
        return history()
    if kind == FactKind.EMAIL_UNSUBSCRIBES:
        return unsubscribes()
    return st.sampled_from(FLAG_VALUES)


def decode(value: bytes | None) -> PreferenceEvent | str:
    try:
        return CODEC.decode_preference_event(value)
    except (DecodeError, KeyError, ValueError, TypeError) as exc:
        return describe_error(exc)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[bytes | None], list[bytes | None], dict[FactKey, str], Settings]:
    configured = make_settings(
        secret=draw(st.sampled_from(("s3cret", "another-secret-é"))),
        buckets=draw(st.sampled_from((1, 8, 1024))),
        shards=draw(st.sampled_from((1, 3, 16, 1000))),
        region=draw(st.sampled_from(("US", "US", "GB"))),
    )
    pairs = draw(st.lists(event_value(), min_size=1, max_size=25))
    rules = PreferenceRules(default_phone_region=configured.state.default_phone_region)
    touched: dict[FactKey, None] = {}
    for value, _ in pairs:
        event = decode(value)
        if isinstance(event, PreferenceEvent):
            touched.update(dict.fromkeys(rules.keys_for(event)))
    facts = {key: draw(value_strategy(key.kind)) for key in touched if draw(st.booleans())}
    return [v for v, _ in pairs], [k for _, k in pairs], facts, configured


@dataclass
class Side:
    """One side's answer for a batch, in comparable plain values."""

    undecodable: list[tuple[int, str]] = field(default_factory=list)
    touched: dict[int, list[tuple[str, bytes]]] = field(default_factory=dict)
    state: dict[tuple[str, bytes], bytes] = field(default_factory=dict)
    rejections: list[tuple[int, str, str]] = field(default_factory=list)
    tallies: Counter[tuple[str, str]] = field(default_factory=Counter)
    miskeyed: list[int] = field(default_factory=list)


def flat(hashes: dict[str, dict[bytes, bytes]]) -> dict[tuple[str, bytes], bytes]:
    return {(key, f): v for key, held in hashes.items() for f, v in held.items()}


def reference(values: list[bytes | None], keys: list[bytes | None], facts: dict[FactKey, str], configured: Settings) -> Side:
    """What the applier did before the core: codec, PreferenceBatch, FactAddressing."""
    side = Side(state=flat(redis_layout(facts, configured)))
    addressing = FactAddressing(configured.state)
    decoded: list[tuple[int, PreferenceEvent]] = []
    for index, value in enumerate(values):
        event = decode(value)
        if isinstance(event, str):
            side.undecodable.append((index, event))
        else:
            decoded.append((index, event))
    batch = PreferenceBatch(PreferenceRules(default_phone_region=configured.state.default_phone_region), [e for _, e in decoded])
    outcome = batch.apply({key: facts.get(key) for key in batch.keys})
    for (index, _), plan in zip(decoded, batch.plans, strict=True):
        plan_keys = getattr(plan, "keys", ())
        side.touched[index] = [(k, f) for k, f in addressing.locate_all(plan_keys)]
    for fact, (key, hash_field) in zip(outcome.writes, addressing.locate_all(outcome.writes), strict=True):
        side.state[(key, hash_field)] = outcome.writes[fact].encode()
    rejected = {position for position, _, _ in outcome.rejections}
    side.rejections = [(decoded[position][0], reason.value, detail) for position, reason, detail in outcome.rejections]
    for position, (_index, event) in enumerate(decoded):
        side.tallies[(event.type.value, "rejected" if position in rejected else "applied")] += 1
    for (index, _), expected in zip(decoded, batch.subject_keys(), strict=True):
        if expected is not None and keys[index] != expected.encode():
            side.miskeyed.append(index)
    return side


def core(
    values: list[bytes | None],
    keys: list[bytes | None],
    facts: dict[FactKey, str],
    configured: Settings,
    fallback: ApplierFallback | None = None,
) -> Side:
    hashes = redis_layout(facts, configured)
    side = Side(state=flat(hashes))
    applier = build_applier_core(configured, CODEC, fallback=fallback)
    planned = applier.plan(values, keys)
    side.undecodable = [(index, detail) for index, _, detail in planned.undecodable]
    side.touched = {index: list(located) for index, located in planned.describe()}
    n, found = read_script(planned.keys, planned.fields, hashes)
    assert n == planned.fact_count
    applied = planned.apply(found)
    for cell, value in PackedWrites(applied.keys, applied.writes).cells(FIELD_BYTES).items():
        side.state[cell] = value.encode()
    side.rejections = list(applied.rejections)
    side.tallies = Counter(applied.tallies)
    side.miskeyed = [index for index, _, _ in planned.miskeyed]
    return side


def assert_equal(actual: Side, expected: Side) -> None:
    assert actual.undecodable == expected.undecodable
    assert actual.touched == expected.touched
    assert actual.rejections == expected.rejections
    assert actual.state == expected.state
    assert actual.tallies == expected.tallies
    assert actual.miskeyed == expected.miskeyed


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario())
def test_core_equals_the_reference(case: tuple[list[bytes | None], list[bytes | None], dict[FactKey, str], Settings]) -> None:
    values, keys, facts, configured = case
    try:
        expected = reference(values, keys, facts, configured)
    except (ValueError, KeyError, TypeError):
        # A stored value the applier never writes, which the reference cannot read: the core refuses it too.
        with pytest.raises(ValueError):
            core(values, keys, facts, configured)
        return
    assert_equal(core(values, keys, facts, configured), expected)


SMS_TIMES = st.lists(
    st.tuples(st.sampled_from((T.SMS_OPT_IN, T.SMS_OPT_OUT, T.CONTACT_DO_NOT_CONTACT)), st.integers(0, 20)),
    min_size=1, max_size=12,
)


@settings(max_examples=1000, deadline=None)
@given(SMS_TIMES, st.sampled_from((None, "out", "5|", "|5", "5|3", "3|5")), st.integers(1, 4))
def test_sms_consent_in_event_time_equals_the_reference_batch_by_batch(
    history_of: list[tuple[T, int]], stored: str | None, batch_size: int
) -> None:
    """One number's opt-ins, opt-outs and do-not-contacts, at times that tie and cross, in batches."""
    configured = make_settings()
    events = [
        PreferenceEvent(
            event_id=f"s{n}", org_id="o1", occurred_at=at, source=PreferenceSource.CONTACT, type=kind,
            phone="+12025550101" if n % 2 else "(202) 555-0101", contact_id="c1",
        ).to_record()
        for n, (kind, at) in enumerate(history_of)
    ]
    facts: dict[FactKey, str] = {} if stored is None else {FactKey("o1", FactKind.SMS_CONSENT, ("+12025550101",)): stored}
    for start in range(0, len(events), batch_size):
        values: list[bytes | None] = [CODEC.encode("PreferenceEvent", r) for r in events[start : start + batch_size]]
        keys: list[bytes | None] = [b"o1:+12025550101"] * len(values)
        expected = reference(values, keys, facts, configured)
        actual = core(values, keys, facts, configured)
        assert_equal(actual, expected)
        # The next batch reads what this one left.
        addressing = FactAddressing(configured.state)
        located = dict(zip(addressing.locate_all([*facts, FactKey("o1", FactKind.SMS_CONSENT, ("+12025550101",))]),
                           [*facts, FactKey("o1", FactKind.SMS_CONSENT, ("+12025550101",))], strict=True))
        facts = {located[cell]: value.decode() for cell, value in actual.state.items() if cell in located}


def test_the_properties_reach_every_outcome() -> None:
    """The generators are not vacuous: a fixed batch reaches every rejection, the fallbacks and the undecodable."""
    base = {"org_id": "o1", "occurred_at": 100, "source": "API"}
    records = [
        {**base, "event_id": "a", "type": "SMS_OPT_OUT", "phone": "+12025550101"},  # SMS_NOT_OPTED_IN, remembered
        {**base, "event_id": "b", "type": "SMS_OPT_IN", "phone": "(202) 555-0101", "occurred_at": 50},  # opted out by a
        {**base, "event_id": "c", "type": "SMS_OPT_IN", "phone": "+12025550101"},  # IRREVERSIBLE
        {**base, "event_id": "d", "type": "CONTACT_OK_TO_EMAIL_SET", "contact_id": "c1", "ok_to_email": False, "source": "USER"},
        {**base, "event_id": "e", "type": "EMAIL_OPT_OUT_USER", "email": "ann@example.com"},  # MISSING_FIELD user_id
        {**base, "event_id": "f", "type": "EMAIL_OPT_OUT_ORGANIZATION", "email": "not-an-address"},  # INVALID_ADDRESS
        {**base, "event_id": "g", "type": "EMAIL_UNSUBSCRIBE", "email": "bob@bücher.de", "domain": "Bücher.de"},
        {**base, "event_id": "h", "type": "CONTACT_SILENCED", "contact_id": "c1"},
        {**base, "event_id": "i", "type": "ORG_SETTINGS_CHANGED",
         "settings": {"unsubscribe_scope": "ORGANIZATION", "user_opt_out_scope": "USER"}},
    ]
    absent = {"email": None, "phone": None, "user_id": None, "domain": None, "contact_id": None, "ok_to_email": None, "settings": None}
    full = [{**absent, **r} for r in records]
    values: list[bytes | None] = [CODEC.encode("PreferenceEvent", r) for r in full]
    values += [None, encode_with(OLD_EVENT_ID, OLD_SCHEMA, {k: v for k, v in full[7].items() if k not in ("ok_to_email", "settings")})]
    keys: list[bytes | None] = [None] * len(values)
    configured = make_settings()
    fallback = RecordingFallback(codec=CODEC, default_phone_region="US")
    actual = core(values, keys, {}, configured, fallback)
    assert_equal(actual, reference(values, keys, {}, configured))
    assert [r[:2] for r in actual.rejections] == [
        (0, "SMS_NOT_OPTED_IN"), (2, "IRREVERSIBLE"), (3, "SOURCE_NOT_ALLOWED"), (4, "MISSING_FIELD"), (5, "INVALID_ADDRESS"),
    ]
    assert actual.undecodable[0][0] == 9
    assert fallback.decoded == 2  # the None and the older writer's value
    assert sorted(fallback.asked) == [
        ("domain", "Bücher.de"), ("email", "bob@bücher.de"), ("email", "not-an-address"), ("phone", "(202) 555-0101"),
    ]
    assert len(actual.miskeyed) == 7  # every event that has a subject, keyed by nothing


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_events, min_size=1, max_size=6))
def test_core_equals_the_reference_on_any_text(events: list[PreferenceEvent]) -> None:
    """Any Unicode in every field (blank by ``str.strip()``'s rules or not), any time: the same outcome."""
    values: list[bytes | None] = [CODEC.encode("PreferenceEvent", e.to_record()) for e in events]
    keys: list[bytes | None] = [kafka_key(e).encode() for e in events]
    configured = make_settings()
    assert_equal(core(values, keys, {}, configured), reference(values, keys, {}, configured))
