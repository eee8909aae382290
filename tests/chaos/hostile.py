"""Hostile input (SPEC §6.5): fuzzed and incompatible values, invalid preference events.

Every value produced here is in the ledger with where it must end: decided
(valid requests, however odd their addresses) or dead-lettered (values that
are not a SendRequest). Preference garbage must reach ``preferences.rejected``
with the reason SPEC §4 names.
"""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass, field, replace

from tests.chaos.checker import DEAD, SUPPRESSED, Verdict, read_committed_records
from tests.chaos.faults import Measured, finish, start_fleet
from tests.chaos.run import ChaosRun
from tests.chaos.workload import (
    DEAD_LETTER,
    DECISION,
    EventProducer,
    Ledger,
    SendProducer,
    T,
)
from worker.codec import AvroCodec, DecodeError
from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceSource,
    RejectionReason,
    SendRequest,
)

HUGE = 900 * 1024


def _header(schema_id: int) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id)


@dataclass
class HostileSends:
    """label -> (value, expected error class or None when any decode error class will do)."""

    poison: list[tuple[str, bytes | None, str | None]] = field(default_factory=list)
    # Decodable requests with odd content: label, request, the primary reason it must get (None: allowed).
    odd_requests: list[tuple[str, SendRequest, str | None]] = field(default_factory=list)


def hostile_sends(run: ChaosRun, *, fuzz: int, seed: int = 11) -> HostileSends:
    """Deterministic bad values, ``fuzz`` random ones, and valid requests with unusable addresses."""
    rng = random.Random(seed)
    codec = run.codec
    audience = run.audience
    out = HostileSends()

    def valid(i: int) -> bytes:
        request = audience.request(
            f"template-{i}", i % len(audience.emails), channel=Channel.EMAIL, category=Category.MARKETING, user="user-1"
        )
        return codec.encode("SendRequest", request.to_record())

    template = valid(0)
    out.poison += [
        ("tombstone", None, "empty-value"),
        ("zero bytes", b"", "empty-value"),
        ("wrong magic byte", b"\x01" + template[1:], "bad-magic-byte"),
        ("JSON instead of Avro", b'{"message_id": "m", "to": "' + audience.emails[0].encode() + b'"}', "bad-magic-byte"),
        ("unknown schema id 999", _header(999) + template[5:], "unknown-schema-id"),
        ("unknown schema id 2^32-1", _header(2**32 - 1) + template[5:], "unknown-schema-id"),
        ("header only", template[:5], "truncated"),
        ("three bytes", template[:3], "truncated"),
        ("trailing garbage", template + b"\x00garbage", "malformed-avro"),
        (
            "PreferenceEvent in the sends topic",
            codec.encode("PreferenceEvent", audience.event(T.SMS_OPT_IN, 0).to_record()),
            "schema-mismatch",
        ),
        ("huge random value (900 KB)", _header(1) + rng.randbytes(HUGE), None),
        ("huge wrong-magic value (900 KB)", b"\x07" + rng.randbytes(HUGE), "bad-magic-byte"),
    ]
    for k in sorted(rng.sample(range(6, len(template)), 6)):
        out.poison.append((f"truncated to {k} bytes", template[:k], None))
    for n in range(fuzz):
        kind = rng.random()
        if kind < 0.4:
            value = rng.randbytes(rng.randint(1, 400))
        elif kind < 0.7:  # a plausible header, garbage body
            value = _header(rng.choice([1, 2, 3, 4, rng.randrange(2**32)])) + rng.randbytes(rng.randint(0, 400))
        else:  # a valid value with a few bytes flipped
            value = bytearray(valid(n))
            for _ in range(rng.randint(1, 4)):
                value[rng.randrange(5, len(value))] = rng.randrange(256)
            value = bytes(value)
        out.poison.append((f"fuzz {n}", value, None))

    def odd(label: str, reason: str | None = "INVALID_ADDRESS", **fields: object) -> None:
        # Contacts 5.. never opt out in the hostile run: a valid address there is allowed.
        base = audience.request("", 5, channel=Channel.EMAIL, category=Category.MARKETING, user="user-1")
        out.odd_requests.append((label, replace(base, **fields), reason))  # type: ignore[arg-type]

    odd("empty to", to="")
    odd("not an address", to="not an address")
    odd("two at signs", to="a@b@example.com")
    odd("NUL in address", to="jane\x00@example.com")
    odd("10 KB local part", to="x" * 10_000 + "@example.com")
    odd("right-to-left override", to="\u202ejane@example.com")
    odd("invalid sender", from_="no-at-sign")
    odd("SMS to letters", channel=Channel.SMS, to="call me maybe")
    odd("SMS to a too short number", channel=Channel.SMS, to="+1 12")
    odd("huge request (900 KB payload) to nobody", to="", payload=rng.randbytes(HUGE))
    odd("huge valid request (900 KB payload)", None, payload=rng.randbytes(HUGE))
    odd("unicode everywhere", None, campaign_id="kampagne-\u00fc\u2603", attributes={"\u2603": "\U0001f600", "k": "v" * 1000})
    return out


# --- preference events ---------------------------------------------------------------


@dataclass
class HostileEvents:
    expected: dict[str, RejectionReason]  # event_id -> reason
    undecodable: list[bytes]  # raw values that must come back as UNDECODABLE with raw set
    irreversible_phone_index: int


def hostile_events(run: ChaosRun, producer: EventProducer, *, seed: int = 13) -> HostileEvents:
    """Invalid events of every rejection reason, plus undecodable values; produced and acknowledged."""
    rng = random.Random(seed)
    audience = run.audience
    codec = run.codec
    expected: dict[str, RejectionReason] = {}
    opted_in = run.traffic.opted_in
    never_in = [i for i in range(len(audience.phones)) if i not in set(opted_in)]
    irreversible = opted_in[0]

    def bad(reason: RejectionReason, event: PreferenceEvent) -> None:
        expected[event.event_id] = reason
        producer.emit([event])

    ev = audience.bare_event

    R = RejectionReason
    bad(R.MISSING_FIELD, ev(T.EMAIL_OPT_OUT_USER, email=audience.emails[1]))
    bad(R.MISSING_FIELD, ev(T.EMAIL_OPT_OUT_ORGANIZATION))
    bad(R.MISSING_FIELD, ev(T.EMAIL_OPT_OUT_DOMAIN, email=audience.emails[1]))
    bad(R.MISSING_FIELD, ev(T.CONTACT_SILENCED))
    bad(R.MISSING_FIELD, ev(T.ORG_SETTINGS_CHANGED))
    bad(R.MISSING_FIELD, ev(T.SMS_OPT_IN, phone="   "))
    bad(R.MISSING_FIELD, ev(T.EMAIL_OPT_OUT_ORGANIZATION, org_id="", email=audience.emails[2]))
    bad(R.INVALID_ADDRESS, ev(T.EMAIL_OPT_OUT_ORGANIZATION, email="not an address"))
    bad(R.INVALID_ADDRESS, ev(T.EMAIL_OPT_OUT_DOMAIN, email=audience.emails[3], domain="bad domain!"))
    bad(R.INVALID_ADDRESS, ev(T.SMS_OPT_IN, phone="12"))
    bad(
        R.SOURCE_NOT_ALLOWED, ev(T.CONTACT_OK_TO_EMAIL_SET, contact_id=audience.contact(4), ok_to_email=False, source=PreferenceSource.USER)
    )
    bad(R.SMS_NOT_OPTED_IN, ev(T.SMS_OPT_OUT, phone=audience.phones[never_in[0]]))
    # An opt-out is final: opting the same number in again must be refused (SPEC §2, §4).
    producer.emit([audience.event(T.SMS_OPT_OUT, irreversible)])
    bad(R.IRREVERSIBLE, audience.event(T.SMS_OPT_IN, irreversible))
    # A valid event among the garbage still counts.
    producer.emit([ev(T.ORG_SETTINGS_CHANGED, settings=OrgSettings())])

    template = codec.encode("PreferenceEvent", audience.event(T.SMS_OPT_IN, 0).to_record())
    undecodable = [
        b"\x00\x00\x00\x00\x02garbage",
        b"\x05" + template[1:],
        _header(4242) + template[5:],
        template[: len(template) // 2],
        codec.encode("SendRequest", audience.request("x", 0, channel=Channel.EMAIL, category=Category.MARKETING, user="u").to_record()),
        rng.randbytes(300),
        _header(2) + rng.randbytes(HUGE),
    ]
    for value in undecodable:
        producer.raw(f"{audience.org_id}:garbage".encode(), value)
    producer.flush()
    return HostileEvents(expected, undecodable, irreversible)


@dataclass
class RejectedSeen:
    by_event: dict[str, str]  # event_id -> reason
    undecodable_raw: list[bytes]
    details_missing: int


def read_rejected(run: ChaosRun) -> RejectedSeen:
    by_event: dict[str, str] = {}
    raws: list[bytes] = []
    missing = 0
    for message in read_committed_records(run.settings, run.settings.topics.rejected):
        record = run.codec.decode("RejectedPreferenceEvent", message.value())
        if not record["detail"]:
            missing += 1
        if record["event"] is not None:
            by_event[record["event"]["event_id"]] = record["reason"]
        else:
            assert record["reason"] == "UNDECODABLE", record["reason"]
            raws.append(record["raw"])
    return RejectedSeen(by_event, raws, missing)


# --- the run ----------------------------------------------------------------------------


@dataclass
class HostileOutcome:
    hostile: HostileSends
    events: HostileEvents
    rejected: RejectedSeen
    burst_exit_codes: list[int] = field(default_factory=list)


DEAD_LETTER_BURST_MAX = 1000


def run_hostile(
    run: ChaosRun, *, valid_sends: int, fuzz: int, records_per_second: float = 1000.0, burst: int = 0
) -> tuple[Verdict, Measured, HostileOutcome]:
    """Hostile values mixed into valid traffic at a rate below the dead-letter burst limit; then, if
    ``burst``, that many garbage values at once: the gates, which opt in to stopping on a burst, must
    stop with exit 12 and, restarted with a higher limit, dead-letter them all."""
    measured = Measured()
    run.setup_preferences()
    events = run.events()
    hostile_evts = hostile_events(run, events)
    # Stopping on a burst is opt-in (off by default: SPEC 6.5); this run opts in.
    _applier, gates = start_fleet(run, 2, {"SENDGATE_GATE__DEAD_LETTER_BURST_MAX": str(DEAD_LETTER_BURST_MAX)})
    producer = run.sends()
    hostile = hostile_sends(run, fuzz=fuzz)
    items: list[object] = [run.traffic.next_send() for _ in range(valid_sends)]
    # SMS to the number whose opt-in came back after its opt-out: every one must be suppressed.
    for _ in range(20):
        items.append(
            run.audience.request(
                run.ledger.next_id(), hostile_evts.irreversible_phone_index, channel=Channel.SMS, category=Category.MARKETING, user="user-1"
            )
        )
    random.Random(3).shuffle(items)
    started = time.monotonic()
    with run.monitor() as monitor:
        # The hostile values are spread through the traffic, never in a burst.
        chunks = max(1, len(items) // 50)
        poison_per_chunk = max(1, -(-len(hostile.poison) // chunks))
        hostile_iter = iter(hostile.poison)
        odd_sent = False
        for n in range(0, len(items), 50):
            for item in items[n : n + 50]:
                producer.send(item)  # type: ignore[arg-type]
            for _ in range(poison_per_chunk):
                entry = next(hostile_iter, None)
                if entry is not None:
                    _produce_poison(producer, run.codec, entry)
            if not odd_sent:
                produce_odd(run, producer, hostile)
                odd_sent = True
            time.sleep(50 / records_per_second)
        for entry in hostile_iter:
            _produce_poison(producer, run.codec, entry)
        producer.flush()
        wait_all_decided(run, timeout=120)
        run.workers.assert_running()
        burst_codes: list[int] = []
        if burst:
            garbage = [b"\x09not a send request " + str(i).encode() for i in range(burst)]
            for value in garbage:
                producer.raw(value, expect=DEAD_LETTER, label="burst")
            producer.flush()
            for gate in gates:
                burst_codes.append(gate.wait(120))
            # Restarted with a higher limit, they drain the garbage into the dead-letter topic.
            for gate in gates:
                gate.env["SENDGATE_GATE__DEAD_LETTER_BURST_MAX"] = str(10 * burst)
                gate.start()
            wait_all_decided(run, timeout=180)
        measured.longest_stall = monitor.longest_stall()
    measured.duration = time.monotonic() - started
    finish(run, measured)
    verdict = run.check()
    return verdict, measured, HostileOutcome(hostile, hostile_evts, read_rejected(run), burst_codes)


def wait_all_decided(run: ChaosRun, *, timeout: float) -> None:
    """Until the outputs hold as many records as were produced.

    Not the group's committed offsets: those can stay behind the last record
    forever when a batch ends in poison (see the poison-offset test).
    """
    topics = run.settings.topics
    deadline = time.monotonic() + timeout
    while True:
        total = sum(
            1 for topic in (topics.allowed, topics.suppressed, topics.dead_letter) for _ in read_committed_records(run.settings, topic)
        )
        if total >= len(run.ledger.sends):
            return
        assert time.monotonic() < deadline, f"only {total} of {len(run.ledger.sends)} records decided after {timeout:g} s"
        time.sleep(1.0)


def _produce_poison(producer: SendProducer, codec: AvroCodec, entry: tuple[str, bytes | None, str | None]) -> None:
    label, value, _cls = entry
    try:
        # A fuzz value that happens to be a valid request is decided like any other.
        request = SendRequest.from_record(codec.decode("SendRequest", value))
    except (DecodeError, KeyError, ValueError, TypeError):
        producer.raw(value, expect=DEAD_LETTER, label=label)
    else:
        producer.raw(value, expect=DECISION, label=label, request=request)


def produce_odd(run: ChaosRun, producer: SendProducer, hostile: HostileSends) -> None:
    for label, request, _reason in hostile.odd_requests:
        producer.send_labelled(replace(request, message_id=run.ledger.next_id()), label=label)


def assert_hostile_outcome(verdict: Verdict, outcome: HostileOutcome, ledger: Ledger) -> None:
    """Shared by the short and the chaos version: routing, reasons, rejections."""
    problems: list[str] = []
    by_label = {record.label: record.message_id for record in ledger.sends.values() if record.label}
    for label, _value, error_class in outcome.hostile.poison:
        found = verdict.outputs.get(by_label[label], [])
        record = ledger.sends[by_label[label]]
        if record.expect == DEAD_LETTER:
            if [o.kind for o in found] != [DEAD]:
                problems.append(f"{label}: expected one dead letter, got {[o.kind for o in found]}")
            elif error_class is not None and found[0].detail != error_class:
                problems.append(f"{label}: error class {found[0].detail!r}, expected {error_class!r}")
    for label, _request, reason in outcome.hostile.odd_requests:
        found = verdict.outputs.get(by_label[label], [])
        kinds = [(o.kind, o.detail) for o in found]
        if reason is None and [k for k, _ in kinds] != ["allowed"]:
            problems.append(f"{label}: expected allowed, got {kinds}")
        if reason is not None and kinds != [(SUPPRESSED, reason)]:
            problems.append(f"{label}: expected suppressed {reason}, got {kinds}")
    seen = outcome.rejected
    for event_id, reason in outcome.events.expected.items():
        if seen.by_event.get(event_id) != reason.value:
            problems.append(f"preference event expected rejected {reason.value}, got {seen.by_event.get(event_id)}")
    for raw in outcome.events.undecodable:
        if raw not in seen.undecodable_raw:
            problems.append(f"undecodable preference value of {len(raw)} bytes not in preferences.rejected")
    if seen.details_missing:
        problems.append(f"{seen.details_missing} rejections without a detail")
    assert not problems, "\n".join(problems)
