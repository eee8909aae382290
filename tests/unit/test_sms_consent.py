"""SMS consent in event time (SPEC §4): no order of application re-opens a number that opted out.

Random histories of SMS events over a few numbers, each number written in
several spellings, with redeliveries (the same event twice) and many ties of
``occurred_at``, are applied in every order (all permutations of the small
ones, random permutations and batchings of the others). Every order must leave
the same stored state and the same decisions, and those decisions must be the
ones SPEC §4 states directly (:class:`tests.chaos.oracle.SpecModel`, written
from the rule's own words rather than from ``SmsConsent``).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos.oracle import SpecModel
from tests.unit.policy_fakes import event
from worker.models import Category, Channel, PreferenceEvent, RejectionReason, SendRequest, SuppressionReason
from worker.models import PreferenceEventType as T
from worker.policy.addresses import normalize_phone
from worker.policy.decision import Decision, DecisionPolicy
from worker.policy.events import PreferenceRules, apply_events
from worker.policy.facts import SMS_OUT, FactKey, FactKind, SmsConsent

RULES = PreferenceRules()
POLICY = DecisionPolicy()
ORG = "o1"
SPELLINGS = {
    "+12025550101": ("+12025550101", "(202) 555-0101", "202.555.0101", "1 202 555 0101"),
    "+12025550102": ("+12025550102", "202-555-0102"),
}
PROBES = [
    POLICY.prepare(SendRequest(f"m-{phone}", ORG, "u1", "c-probe", Channel.SMS, category, phone, "55555", 0))
    for phone in SPELLINGS
    for category in Category
]


@st.composite
def sms_events(draw: st.DrawFn, index: int) -> PreferenceEvent:
    number = draw(st.sampled_from(sorted(SPELLINGS)))
    phone = draw(st.sampled_from(SPELLINGS[number]))
    kind = draw(st.sampled_from([T.SMS_OPT_IN] * 4 + [T.SMS_OPT_OUT] * 3 + [T.CONTACT_DO_NOT_CONTACT]))
    fields = {"phone": phone, "contact_id": f"c{index}"} if kind is T.CONTACT_DO_NOT_CONTACT else {"phone": phone}
    return event(kind, org=ORG, at=draw(st.integers(0, 4)), event_id=f"e{index:03d}", **fields)


@st.composite
def histories(draw: st.DrawFn, max_size: int) -> list[PreferenceEvent]:
    events = [draw(sms_events(i)) for i in range(draw(st.integers(1, max_size)))]
    redelivered = draw(st.lists(st.sampled_from(events), max_size=3))
    return events + redelivered


def applied(events: list[PreferenceEvent], batch_sizes: tuple[int, ...] = ()) -> dict[FactKey, str]:
    state: dict[FactKey, str] = {}
    start = 0
    for size in (*batch_sizes, len(events)):
        writes, _ = apply_events(RULES, events[start : start + size], state)
        state.update(writes)
        start += size
    return state


def decisions(state: dict[FactKey, str]) -> list[Decision]:
    return [POLICY.decide(prepared, state) for prepared in PROBES]


def spec_allows(events: list[PreferenceEvent]) -> list[bool]:
    model = SpecModel()  # takes normalised numbers, as its name for them
    for ev in events:
        model.apply(replace(ev, phone=normalize_phone(ev.phone or "")))
    return [model.sms_opted_in(ORG, prepared.request.to) for prepared in PROBES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(max_size=4))
def test_every_permutation_of_a_short_history_gives_one_state(history: list[PreferenceEvent]) -> None:
    expected = applied(history)
    for order in itertools.permutations(history):
        assert applied(list(order)) == expected
    assert [d.allowed for d in decisions(expected)] == spec_allows(history)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=histories(max_size=12))
def test_any_order_and_batching_of_a_long_history_gives_one_state(
    data: st.DataObject, history: list[PreferenceEvent]
) -> None:
    expected = applied(history)
    order = data.draw(st.permutations(history))
    batches = tuple(data.draw(st.lists(st.integers(1, 5), max_size=len(history))))
    state = applied(list(order), batches)
    assert state == expected
    assert decisions(state) == decisions(expected)
    assert [d.allowed for d in decisions(state)] == spec_allows(history)


@settings(max_examples=200, deadline=None)
@given(history=histories(max_size=10))
def test_a_number_once_opted_out_stays_out_whatever_follows(history: list[PreferenceEvent]) -> None:
    state: dict[FactKey, str] = {}
    out: set[FactKey] = set()
    for ev in history:
        writes, _ = apply_events(RULES, [ev], state)
        state.update(writes)
        assert out <= {key for key, value in state.items() if value == SMS_OUT}
        out = {key for key, value in state.items() if value == SMS_OUT}


# -- the three shapes of issue 15, and the miskeyed producer -------------------------

NUMBER = "+16502530001"
KEY = FactKey(ORG, FactKind.SMS_CONSENT, (NUMBER,))
SEND = POLICY.prepare(SendRequest("m1", ORG, "u1", "c1", Channel.SMS, Category.MARKETING, NUMBER, "55555", 0))


def _run(*events: PreferenceEvent) -> tuple[dict[FactKey, str], list[RejectionReason]]:
    state: dict[FactKey, str] = {}
    reasons: list[RejectionReason] = []
    for ev in events:  # one batch each: as separate Kafka batches would be
        writes, rejected = apply_events(RULES, [ev], state)
        state.update(writes)
        reasons += [reason for _, reason, _ in rejected]
    return state, reasons


def test_an_opt_out_applied_before_an_earlier_opt_in_leaves_the_number_opted_out() -> None:
    """Shape A: the opt-out is rejected when applied, but remembered; the earlier opt-in then closes the number."""
    state, reasons = _run(
        event(T.SMS_OPT_OUT, org=ORG, phone=NUMBER, at=150),
        event(T.SMS_OPT_IN, org=ORG, phone="(650) 253-0001", at=100),
    )
    assert reasons == [RejectionReason.SMS_NOT_OPTED_IN]
    assert state[KEY] == SMS_OUT
    assert POLICY.decide(SEND, state).reasons == (SuppressionReason.SMS_OPT_OUT,)


def test_an_opt_out_earlier_than_every_opt_in_is_rejected_and_the_number_stays_in() -> None:
    """Shape B: nothing opted the number in before t=50."""
    state, reasons = _run(
        event(T.SMS_OPT_IN, org=ORG, phone=NUMBER, at=100),
        event(T.SMS_OPT_OUT, org=ORG, phone=NUMBER, at=50),
    )
    assert reasons == [RejectionReason.SMS_NOT_OPTED_IN]
    assert SmsConsent.decode(state[KEY]) == SmsConsent(earliest_opt_in=100, latest_opt_out=50)
    assert POLICY.decide(SEND, state).allowed


def test_a_redelivered_rejected_opt_out_changes_nothing_more() -> None:
    """Shape C: E1 rejected, a later opt-in, E1 again: still opted in, the state unchanged."""
    e1 = event(T.SMS_OPT_OUT, org=ORG, phone=NUMBER, at=100, event_id="E1")
    before, _ = _run(e1, event(T.SMS_OPT_IN, org=ORG, phone=NUMBER, at=200))
    after, reasons = _run(e1, event(T.SMS_OPT_IN, org=ORG, phone=NUMBER, at=200), e1)
    assert after == before
    assert reasons == [RejectionReason.SMS_NOT_OPTED_IN, RejectionReason.SMS_NOT_OPTED_IN]
    assert POLICY.decide(SEND, after).allowed


def test_the_remembered_opt_out_is_named_in_the_decision_detail() -> None:
    state, _ = _run(event(T.SMS_OPT_OUT, org=ORG, phone=NUMBER, at=150))
    decision = POLICY.decide(SEND, state)
    assert decision.reasons == (SuppressionReason.SMS_NOT_OPTED_IN,)
    assert decision.details == {"SMS_NOT_OPTED_IN": "sms_consent=none opt-out@150"}


def test_do_not_contact_closes_a_number_whatever_its_times() -> None:
    state, reasons = _run(
        event(T.SMS_OPT_IN, org=ORG, phone=NUMBER, at=100),
        event(T.CONTACT_DO_NOT_CONTACT, org=ORG, contact_id="c9", phone=NUMBER, at=10),
        event(T.SMS_OPT_IN, org=ORG, phone=NUMBER, at=500),
    )
    assert state[KEY] == SMS_OUT
    assert reasons == [RejectionReason.IRREVERSIBLE]


def test_stored_values_round_trip_and_unreadable_ones_hold_no_consent() -> None:
    for consent in (
        SmsConsent(earliest_opt_in=100),
        SmsConsent(latest_opt_out=-5),
        SmsConsent(earliest_opt_in=200, latest_opt_out=150),
        SmsConsent(opted_out=True),
    ):
        assert SmsConsent.decode(consent.encode()) == consent
    for raw in (None, "", "in", "x|", "|y", "1|2|3", "garbage", " 1|", "+1|", "1_0|", "|٣"):
        assert SmsConsent.decode(raw) == SmsConsent()
        assert not SmsConsent.decode(raw).opted_in
