"""The checker and its oracle must catch what they are there to catch (no services needed)."""

from __future__ import annotations

import dataclasses

from tests.chaos import report
from tests.chaos.checker import ALLOWED, SUPPRESSED, Output, judge, suppressed_output
from tests.chaos.monitor import ProgressMonitor, Sample
from tests.chaos.oracle import Oracle, SpecModel
from tests.chaos.workload import (
    DEAD_LETTER,
    DECISION,
    AckedEvent,
    Audience,
    Ledger,
    SentRecord,
)
from worker.models import Category, Channel
from worker.models import PreferenceEventType as T


def _ledger() -> tuple[Ledger, Audience]:
    ledger = Ledger(run_id="r1")
    return ledger, Audience.create("r1", 10)


def _send(ledger: Ledger, audience: Audience, i: int, at: float, *, channel=Channel.EMAIL, category=Category.MARKETING) -> SentRecord:
    message_id = ledger.next_id()
    request = audience.request(message_id, i, channel=channel, category=category, user="user-1")
    record = SentRecord(message_id, b"v", DECISION, request, produced_at=at, partition=0, offset=len(ledger.sends))
    ledger.add_send(record)
    return record


def _ack(ledger: Ledger, audience: Audience, type_: T, i: int, at: float, **fields: object) -> None:
    ledger.add_event(AckedEvent(audience.event(type_, i, **fields), acked_at=at, partition=0, offset=len(ledger.events)))


def _out(kind: str, record: SentRecord, problem: str = "") -> Output:
    return Output(kind, record.message_id, "", None, problem)


def test_a_clean_run_is_clean():
    ledger, audience = _ledger()
    _ack(ledger, audience, T.EMAIL_OPT_OUT_ORGANIZATION, 1, at=1.0)
    a, b = _send(ledger, audience, 0, 2.0), _send(ledger, audience, 1, 2.0)
    verdict = judge(ledger, {a.message_id: [_out(ALLOWED, a)], b.message_id: [_out(SUPPRESSED, b)]}, [])
    assert verdict.clean, verdict.describe()


def test_lost_duplicated_and_misrouted_records_are_reported():
    ledger, audience = _ledger()
    lost, doubled, split, garbage, altered = (_send(ledger, audience, i, 1.0) for i in range(5))
    garbage.expect = DEAD_LETTER
    outputs = {
        doubled.message_id: [_out(SUPPRESSED, doubled), _out(SUPPRESSED, doubled)],
        split.message_id: [_out(ALLOWED, split), _out(SUPPRESSED, split)],
        garbage.message_id: [_out(ALLOWED, garbage)],
        altered.message_id: [_out(ALLOWED, altered, problem="allowed value differs from the input bytes")],
    }
    verdict = judge(ledger, outputs, ["allowed:someone-else"])
    assert verdict.lost == [lost.message_id]
    assert verdict.duplicated == [doubled.message_id]
    assert sorted(verdict.misrouted) == sorted([split.message_id, garbage.message_id, altered.message_id])
    assert verdict.unexpected == ["allowed:someone-else"] and not verdict.clean


def test_an_allow_after_an_acknowledged_opt_out_is_wrongly_allowed_and_one_before_is_not():
    ledger, audience = _ledger()
    before = _send(ledger, audience, 3, at=1.0)
    _ack(ledger, audience, T.EMAIL_OPT_OUT_ORGANIZATION, 3, at=2.0)
    after = _send(ledger, audience, 3, at=2.001)
    transactional = _send(ledger, audience, 3, at=3.0, category=Category.TRANSACTIONAL)
    other = _send(ledger, audience, 4, at=3.0)
    outputs = {r.message_id: [_out(ALLOWED, r)] for r in (before, after, transactional, other)}
    assert judge(ledger, outputs, []).wrongly_allowed == [after.message_id]


def test_a_suppression_no_state_explains_is_wrongly_suppressed_and_one_after_an_opt_out_is_not():
    ledger, audience = _ledger()
    unexplained = _send(ledger, audience, 0, 1.0)
    _ack(ledger, audience, T.EMAIL_OPT_OUT_ORGANIZATION, 1, at=2.0)
    before_ack, after_ack = _send(ledger, audience, 1, 1.5), _send(ledger, audience, 1, 3.0)
    outputs = {r.message_id: [_out(SUPPRESSED, r)] for r in (unexplained, before_ack, after_ack)}
    verdict = judge(ledger, outputs, [])
    # Produced before the opt-out's ack, but the gate may have applied it already: not wrong.
    assert verdict.wrongly_suppressed == [unexplained.message_id]
    assert not verdict.clean and "wrongly_suppressed=1" in verdict.describe()


def test_the_chaos_table_counts_wrong_suppressions_next_to_wrong_allows():
    ledger, audience = _ledger()
    unexplained = _send(ledger, audience, 0, 1.0)
    verdict = judge(ledger, {unexplained.message_id: [_out(SUPPRESSED, unexplained)]}, [])
    row = report.Row("a fault").fill([verdict], pause="-")
    header, _rule, line = report.render([row]).splitlines()[:3]
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    cells = dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
    assert columns.index("wrongly suppressed") == columns.index("wrongly allowed") + 1
    assert cells["wrongly allowed"] == "0" and cells["wrongly suppressed"] == "1"


def test_an_unreadable_suppressed_record_is_misrouted_not_a_crash():
    from worker.codec import AvroCodec
    from worker.config import Settings

    ledger, audience = _ledger()
    record = _send(ledger, audience, 0, 1.0)
    output = suppressed_output(record.message_id, b"\x00\x00\x00\x00\x03garbage", record, AvroCodec.from_settings(Settings()))
    assert output.kind == SUPPRESSED and output.problem.startswith("undecodable SuppressedSend")
    verdict = judge(ledger, {record.message_id: [output]}, [])
    assert verdict.misrouted == [record.message_id]


def test_sms_needs_an_opt_in_and_an_opt_out_is_final_in_the_spec_model():
    ledger, audience = _ledger()
    _ack(ledger, audience, T.SMS_OPT_IN, 1, at=1.0)
    _ack(ledger, audience, T.SMS_OPT_IN, 2, at=1.0)
    _ack(ledger, audience, T.SMS_OPT_OUT, 2, at=2.0)
    _ack(ledger, audience, T.SMS_OPT_IN, 2, at=3.0)  # rejected: IRREVERSIBLE (SPEC §4)
    opted_in = _send(ledger, audience, 1, at=4.0, channel=Channel.SMS)
    never = _send(ledger, audience, 5, at=4.0, channel=Channel.SMS)
    opted_out = _send(ledger, audience, 2, at=4.0, channel=Channel.SMS)
    outputs = {r.message_id: [_out(ALLOWED, r)] for r in (opted_in, never, opted_out)}
    assert sorted(judge(ledger, outputs, []).wrongly_allowed) == sorted([never.message_id, opted_out.message_id])


def test_a_late_opt_in_the_gate_may_already_have_applied_is_not_blamed():
    ledger, audience = _ledger()
    send = _send(ledger, audience, 1, at=1.0, channel=Channel.SMS)
    _ack(ledger, audience, T.SMS_OPT_IN, 1, at=2.0)
    assert Oracle(ledger.events).wrongly_allowed([send]) == []


def test_do_not_contact_reaches_duplicates_by_address_in_the_spec_model():
    _, audience = _ledger()
    model = SpecModel()
    model.apply(audience.event(T.CONTACT_DO_NOT_CONTACT, 1))
    request = audience.request("m", 1, channel=Channel.EMAIL, category=Category.MARKETING, user="u")
    duplicate = dataclasses.replace(request, contact_id="a-duplicate-contact")
    assert model.suppresses(duplicate)
    transactional = audience.request("t", 1, channel=Channel.EMAIL, category=Category.TRANSACTIONAL, user="u")
    assert model.suppresses(transactional), "the contact itself is on the list: even transactional email stops"


def test_stalls_are_measured_per_partition():
    monitor = ProgressMonitor.__new__(ProgressMonitor)
    monitor.samples = [
        Sample(0.0, {0: 0, 1: 0}, {0: 10, 1: 10}),
        Sample(1.0, {0: 5, 1: 0}, {0: 10, 1: 10}),
        Sample(2.0, {0: 10, 1: 0}, {0: 10, 1: 10}),
        Sample(5.0, {0: 10, 1: 10}, {0: 10, 1: 10}),
    ]
    assert monitor.longest_stall() == 5.0
    assert [s.partition for s in monitor.stalls()] == [1]
