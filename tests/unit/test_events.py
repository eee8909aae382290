"""SPEC §4 preference events: effects, rejections, idempotence and last-writer-wins."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.unit.policy_fakes import EMAIL, ORG, PHONE, event, org_settings
from worker.models import (
    PreferenceEvent,
    PreferenceSource,
    RejectionReason,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.models import PreferenceEventType as T
from worker.policy.events import EventOutcome, PreferenceRules, apply_events
from worker.policy.facts import (
    FLAG_SET,
    SMS_OUT,
    FactKey,
    FactKind,
    SettingsChange,
    SettingsHistory,
    SmsConsent,
    Stamped,
    Unsubscribe,
    encode_unsubscribes,
)

RULES = PreferenceRules()
# A number opted in before the default event time (1_000) of policy_fakes.event.
SMS_IN = SmsConsent(earliest_opt_in=500).encode()


def key(kind: FactKind, *subject: str, org: str = ORG) -> FactKey:
    return FactKey(org, kind, subject)


EO = key(FactKind.EMAIL_OPT_OUT_ORGANIZATION, EMAIL)
EA = key(FactKind.EMAIL_OPT_OUT_ANY_USER, EMAIL)
UN = key(FactKind.EMAIL_UNSUBSCRIBES, EMAIL)
SMS = key(FactKind.SMS_CONSENT, PHONE)
OS = key(FactKind.ORG_SETTINGS)


def contact(kind: FactKind, contact_id: str = "c1") -> FactKey:
    return key(kind, contact_id)


def run(
    *events: PreferenceEvent, facts: dict[FactKey, str] | None = None
) -> tuple[dict[FactKey, str], list[Any]]:
    """Apply in order on top of ``facts``; the resulting full state and the rejections."""
    state = dict(facts or {})
    writes, rejections = apply_events(RULES, events, state)
    state.update(writes)
    return state, [(reason, detail) for _, reason, detail in rejections]


# -- effects of every type ---------------------------------------------------


def _effects() -> list[
    tuple[str, PreferenceEvent, dict[FactKey, str], dict[FactKey, str]]
]:
    """(name, event, facts before, expected writes)."""
    silenced = event(T.CONTACT_SILENCED, contact_id="c1", at=7, event_id="s1")
    unsilenced = event(T.CONTACT_UNSILENCED, contact_id="c1", at=7, event_id="s2")
    ok_false = event(
        T.CONTACT_OK_TO_EMAIL_SET,
        contact_id="c1",
        ok_to_email=False,
        at=9,
        event_id="k1",
    )
    ok_true = event(
        T.CONTACT_OK_TO_EMAIL_SET,
        contact_id="c1",
        ok_to_email=True,
        at=9,
        event_id="k2",
        source=PreferenceSource.IMPORT,
    )
    org_change = event(
        T.ORG_SETTINGS_CHANGED,
        at=3,
        event_id="o1",
        settings=org_settings(
            UnsubscribeScope.ORGANIZATION, UserOptOutScope.ORGANIZATION
        ),
    )
    return [
        (
            "opt-out user",
            event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u1"),
            {},
            {key(FactKind.EMAIL_OPT_OUT_USER, EMAIL, "u1"): FLAG_SET, EA: FLAG_SET},
        ),
        (
            "opt-out user, another user already",
            event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u1"),
            {EA: FLAG_SET},
            {key(FactKind.EMAIL_OPT_OUT_USER, EMAIL, "u1"): FLAG_SET},
        ),
        (
            "opt-out organization",
            event(T.EMAIL_OPT_OUT_ORGANIZATION, email=EMAIL),
            {},
            {EO: FLAG_SET},
        ),
        (
            "opt-out domain",
            event(T.EMAIL_OPT_OUT_DOMAIN, email=EMAIL, domain="ACME.com"),
            {},
            {key(FactKind.EMAIL_OPT_OUT_DOMAIN, EMAIL, "acme.com"): FLAG_SET},
        ),
        (
            "unsubscribe with domain",
            event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="acme.com", at=5),
            {},
            {UN: encode_unsubscribes((Unsubscribe("acme.com", 5),))},
        ),
        (
            "unsubscribe without domain",
            event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, at=5),
            {},
            {UN: encode_unsubscribes((Unsubscribe("", 5),))},
        ),
        (
            "unsubscribe with empty domain",
            event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain=" ", at=5),
            {},
            {UN: encode_unsubscribes((Unsubscribe("", 5),))},
        ),
        # An unparsable domain is recorded as none: organization level, never narrower.
        (
            "unsubscribe with unusable domain",
            event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="not a domain", at=5),
            {},
            {UN: encode_unsubscribes((Unsubscribe("", 5),))},
        ),
        (
            "second unsubscribe",
            event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="b.com", at=5),
            {UN: encode_unsubscribes((Unsubscribe("a.com", 9),))},
            {
                UN: encode_unsubscribes(
                    (Unsubscribe("a.com", 9), Unsubscribe("b.com", 5))
                )
            },
        ),
        ("sms opt-in", event(T.SMS_OPT_IN, phone="(202) 555-0101"), {}, {SMS: "1000|"}),
        ("sms opt-in when in", event(T.SMS_OPT_IN, phone=PHONE), {SMS: SMS_IN}, {}),
        (
            "sms opt-in earlier than the one held",
            event(T.SMS_OPT_IN, phone=PHONE, at=200),
            {SMS: SMS_IN},
            {SMS: "200|"},
        ),
        (
            "sms opt-in after a remembered earlier opt-out",
            event(T.SMS_OPT_IN, phone=PHONE, at=1_000),
            {SMS: "|900"},
            {SMS: "1000|900"},
        ),
        (
            "sms opt-in before a remembered later opt-out",
            event(T.SMS_OPT_IN, phone=PHONE, at=1_000),
            {SMS: "|1500"},
            {SMS: SMS_OUT},
        ),
        (
            "sms opt-in at the instant of a remembered opt-out",
            event(T.SMS_OPT_IN, phone=PHONE, at=1_500),
            {SMS: "|1500"},
            {SMS: SMS_OUT},
        ),
        (
            "sms opt-out at the instant of the opt-in",
            event(T.SMS_OPT_OUT, phone=PHONE, at=500),
            {SMS: SMS_IN},
            {SMS: SMS_OUT},
        ),
        (
            "sms opt-out when in",
            event(T.SMS_OPT_OUT, phone=PHONE),
            {SMS: SMS_IN},
            {SMS: SMS_OUT},
        ),
        ("sms opt-out when out", event(T.SMS_OPT_OUT, phone=PHONE), {SMS: SMS_OUT}, {}),
        ("silenced", silenced, {}, {contact(FactKind.SILENCED): "1|7|s1"}),
        ("unsilenced", unsilenced, {}, {contact(FactKind.SILENCED): "0|7|s2"}),
        (
            "unsilenced over older silence",
            unsilenced,
            {contact(FactKind.SILENCED): "1|7|s1"},
            {contact(FactKind.SILENCED): "0|7|s2"},
        ),
        (
            "silenced under newer unsilence",
            silenced,
            {contact(FactKind.SILENCED): "0|7|s2"},
            {},
        ),
        (
            "do not contact, contact only",
            event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1"),
            {},
            {contact(FactKind.DO_NOT_CONTACT): FLAG_SET},
        ),
        (
            "do not contact, email and phone",
            event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1", email=EMAIL, phone=PHONE),
            {},
            {contact(FactKind.DO_NOT_CONTACT): FLAG_SET, EO: FLAG_SET, SMS: SMS_OUT},
        ),
        (
            "do not contact over opt-in",
            event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1", phone=PHONE),
            {SMS: SMS_IN},
            {contact(FactKind.DO_NOT_CONTACT): FLAG_SET, SMS: SMS_OUT},
        ),
        (
            "do not contact, already opted out",
            event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1", email=EMAIL, phone=PHONE),
            {EO: FLAG_SET, SMS: SMS_OUT},
            {contact(FactKind.DO_NOT_CONTACT): FLAG_SET},
        ),
        ("ok to email false", ok_false, {}, {contact(FactKind.OK_TO_EMAIL): "0|9|k1"}),
        ("ok to email true", ok_true, {}, {contact(FactKind.OK_TO_EMAIL): "1|9|k2"}),
        ("ok to email, older", ok_false, {contact(FactKind.OK_TO_EMAIL): "1|10|a"}, {}),
        (
            "settings",
            org_change,
            {},
            {
                OS: SettingsHistory(
                    (SettingsChange(3, "o1", org_change.settings),)
                ).encode()
            },
        ),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize(
    ("name", "ev", "before", "writes"), _effects(), ids=[e[0] for e in _effects()]
)
def test_effects(
    name: str,
    ev: PreferenceEvent,
    before: dict[FactKey, str],
    writes: dict[FactKey, str],
) -> None:
    outcome = RULES.apply(ev, before)
    assert outcome == EventOutcome(writes, None)
    assert set(writes) <= set(RULES.keys_for(ev))


@pytest.mark.parametrize(
    ("name", "ev", "before", "writes"), _effects(), ids=[e[0] for e in _effects()]
)
def test_idempotent(
    name: str,
    ev: PreferenceEvent,
    before: dict[FactKey, str],
    writes: dict[FactKey, str],
) -> None:
    once, _ = run(ev, facts=before)
    twice, rejections = run(ev, ev, facts=before)
    assert twice == once
    again = RULES.apply(ev, once)
    assert again.writes == {}
    if ev.type is T.SMS_OPT_IN and once[SMS] == SMS_OUT:
        # The opt-in that completed an opt-out finds the number opted out when
        # it comes again (opted out keeps no event ids): rejected, changing nothing.
        assert [reason for reason, _ in rejections] == [RejectionReason.IRREVERSIBLE]
        assert again.rejection is not None and again.rejection[0] is RejectionReason.IRREVERSIBLE
    else:
        assert rejections == [] and again.rejection is None


def test_keys_for() -> None:
    assert RULES.keys_for(
        event(T.EMAIL_OPT_OUT_USER, email=" Jane.Doe@example.com", user_id="u1")
    ) == (
        key(FactKind.EMAIL_OPT_OUT_USER, EMAIL, "u1"),
        EA,
    )
    assert RULES.keys_for(
        event(
            T.CONTACT_DO_NOT_CONTACT, contact_id="c1", email=EMAIL, phone="2025550101"
        )
    ) == (
        contact(FactKind.DO_NOT_CONTACT),
        EO,
        SMS,
    )
    assert RULES.keys_for(
        event(T.ORG_SETTINGS_CHANGED, org="org-2", settings=org_settings())
    ) == (key(FactKind.ORG_SETTINGS, org="org-2"),)
    assert RULES.keys_for(event(T.SMS_OPT_IN, phone="nope")) == ()
    assert RULES.keys_for(event(T.EMAIL_OPT_OUT_ORGANIZATION)) == ()


def test_fields_a_type_does_not_use_are_ignored() -> None:
    outcome = RULES.apply(
        event(
            T.EMAIL_OPT_OUT_ORGANIZATION, email=EMAIL, phone="garbage", contact_id="c1"
        ),
        {},
    )
    assert outcome == EventOutcome({EO: FLAG_SET}, None)
    outcome = RULES.apply(event(T.SMS_OPT_IN, phone=PHONE, email="garbage"), {})
    assert outcome == EventOutcome({SMS: "1000|"}, None)


def test_phone_region_of_the_rules() -> None:
    rules = PreferenceRules(default_phone_region="GB")
    assert rules.keys_for(event(T.SMS_OPT_IN, phone="020 7946 0958")) == (
        key(FactKind.SMS_CONSENT, "+442079460958"),
    )


# -- rejections ---------------------------------------------------------------


def _assert_rejected(
    ev: PreferenceEvent, facts: dict[FactKey, str], reason: RejectionReason
) -> str:
    outcome = RULES.apply(ev, facts)
    assert outcome.writes == {}
    assert outcome.rejection is not None and outcome.rejection[0] is reason
    detail = outcome.rejection[1]
    assert detail and "@" not in detail and "555" not in detail
    return detail


@pytest.mark.parametrize("before", [{SMS: SMS_OUT}], ids=["opted-out"])
def test_opt_in_after_opt_out_is_irreversible(before: dict[FactKey, str]) -> None:
    _assert_rejected(
        event(T.SMS_OPT_IN, phone=PHONE), before, RejectionReason.IRREVERSIBLE
    )


def test_opt_in_after_do_not_contact_is_irreversible() -> None:
    state, rejections = run(
        event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1", phone="202 555 0101"),
        event(T.SMS_OPT_IN, phone=PHONE),
    )
    assert state[SMS] == SMS_OUT
    assert [reason for reason, _ in rejections] == [RejectionReason.IRREVERSIBLE]


@pytest.mark.parametrize(
    ("before", "remembered"),
    [
        ({}, "|1000"),
        ({key(FactKind.SMS_CONSENT, "+12025550199"): SMS_IN}, "|1000"),
        ({SMS: "2000|"}, "2000|1000"),  # opted in only after it
        ({SMS: "|1200"}, None),  # a later opt-out is remembered already
    ],
    ids=["never", "another number", "opted in later", "later opt-out held"],
)
def test_opt_out_with_no_earlier_opt_in_is_rejected_but_remembered(
    before: dict[FactKey, str], remembered: str | None
) -> None:
    outcome = RULES.apply(event(T.SMS_OPT_OUT, phone=PHONE), before)
    assert outcome.rejection is not None
    reason, detail = outcome.rejection
    assert reason is RejectionReason.SMS_NOT_OPTED_IN
    assert "555" not in detail and "+1" not in detail
    assert outcome.writes == ({SMS: remembered} if remembered else {})
@pytest.mark.parametrize(
    "source",
    [
        s
        for s in PreferenceSource
        if s not in (PreferenceSource.API, PreferenceSource.IMPORT)
    ],
)
@pytest.mark.parametrize("ok_to_email", [False, True])
def test_ok_to_email_from_other_sources(
    source: PreferenceSource, ok_to_email: bool
) -> None:
    ev = event(
        T.CONTACT_OK_TO_EMAIL_SET,
        contact_id="c1",
        ok_to_email=ok_to_email,
        source=source,
    )
    _assert_rejected(ev, {}, RejectionReason.SOURCE_NOT_ALLOWED)


@pytest.mark.parametrize("source", [PreferenceSource.API, PreferenceSource.IMPORT])
def test_ok_to_email_from_api_and_import(source: PreferenceSource) -> None:
    ev = event(
        T.CONTACT_OK_TO_EMAIL_SET, contact_id="c1", ok_to_email=False, source=source
    )
    assert RULES.apply(ev, {}).rejection is None


_COMPLETE: dict[T, dict[str, Any]] = {
    T.EMAIL_OPT_OUT_USER: {"email": EMAIL, "user_id": "u1"},
    T.EMAIL_OPT_OUT_ORGANIZATION: {"email": EMAIL},
    T.EMAIL_OPT_OUT_DOMAIN: {"email": EMAIL, "domain": "acme.com"},
    T.EMAIL_UNSUBSCRIBE: {"email": EMAIL},
    T.SMS_OPT_IN: {"phone": PHONE},
    T.SMS_OPT_OUT: {"phone": PHONE},
    T.CONTACT_SILENCED: {"contact_id": "c1"},
    T.CONTACT_UNSILENCED: {"contact_id": "c1"},
    T.CONTACT_DO_NOT_CONTACT: {"contact_id": "c1"},
    T.CONTACT_OK_TO_EMAIL_SET: {"contact_id": "c1", "ok_to_email": False},
    T.ORG_SETTINGS_CHANGED: {"settings": org_settings()},
}


def test_every_type_has_a_complete_example() -> None:
    assert set(_COMPLETE) == set(T)


@pytest.mark.parametrize(
    ("type_", "field", "empty"),
    [
        (type_, name, empty)
        for type_, fields in _COMPLETE.items()
        for name in ("org_id", *fields)
        for empty in (
            (None, "", "  ") if name not in ("ok_to_email", "settings") else (None,)
        )
    ],
)
def test_missing_field(type_: T, field: str, empty: Any) -> None:
    complete = event(type_, **_COMPLETE[type_])
    assert RULES.apply(complete, {SMS: SMS_IN}).rejection is None
    incomplete = replace(complete, **{field: empty})
    detail = _assert_rejected(incomplete, {SMS: SMS_IN}, RejectionReason.MISSING_FIELD)
    assert field in detail
    assert RULES.keys_for(incomplete) == ()


def test_missing_field_names_all_missing() -> None:
    detail = _assert_rejected(
        event(T.EMAIL_OPT_OUT_USER), {}, RejectionReason.MISSING_FIELD
    )
    assert "email" in detail and "user_id" in detail


@pytest.mark.parametrize(
    ("type_", "fields"),
    [
        (T.EMAIL_OPT_OUT_USER, {"email": "jane.doe@", "user_id": "u1"}),
        (T.EMAIL_OPT_OUT_ORGANIZATION, {"email": "jane doe@example.com"}),
        (T.EMAIL_OPT_OUT_DOMAIN, {"email": "@example.com", "domain": "acme.com"}),
        (T.EMAIL_OPT_OUT_DOMAIN, {"email": EMAIL, "domain": "acme"}),
        (T.EMAIL_OPT_OUT_DOMAIN, {"email": EMAIL, "domain": "x@acme.com"}),
        (T.EMAIL_UNSUBSCRIBE, {"email": "jane.doe.example.com"}),
        (T.SMS_OPT_IN, {"phone": "555-0101"}),
        (T.SMS_OPT_OUT, {"phone": "call me"}),
        (
            T.CONTACT_DO_NOT_CONTACT,
            {"contact_id": "c1", "email": "jane.doe@", "phone": PHONE},
        ),
        (T.CONTACT_DO_NOT_CONTACT, {"contact_id": "c1", "email": EMAIL, "phone": "12"}),
    ],
)
def test_invalid_address(type_: T, fields: dict[str, Any]) -> None:
    ev = event(type_, **fields)
    _assert_rejected(ev, {SMS: SMS_IN}, RejectionReason.INVALID_ADDRESS)
    assert RULES.keys_for(ev) == ()


def test_rejected_events_change_nothing_in_a_batch() -> None:
    before = {SMS: SMS_OUT}
    state, rejections = run(
        event(T.SMS_OPT_IN, phone=PHONE),
        event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1", email=EMAIL, phone="bad"),
        event(
            T.CONTACT_OK_TO_EMAIL_SET,
            contact_id="c1",
            ok_to_email=False,
            source=PreferenceSource.USER,
        ),
        facts=before,
    )
    assert state == before
    assert [reason for reason, _ in rejections] == [
        RejectionReason.IRREVERSIBLE,
        RejectionReason.INVALID_ADDRESS,
        RejectionReason.SOURCE_NOT_ALLOWED,
    ]


# -- batches --------------------------------------------------------------------


def test_later_events_of_a_batch_see_earlier_writes() -> None:
    events = [
        event(T.SMS_OPT_OUT, phone=PHONE),  # rejected: not opted in yet
        event(T.SMS_OPT_IN, phone=PHONE),
        event(T.SMS_OPT_OUT, phone="(202) 555-0101"),
        event(T.SMS_OPT_IN, phone=PHONE),  # rejected: opted out
    ]
    writes, rejections = apply_events(RULES, events, {})
    assert writes == {SMS: SMS_OUT}
    assert [(ev, reason) for ev, reason, _ in rejections] == [
        (events[0], RejectionReason.SMS_NOT_OPTED_IN),
        (events[3], RejectionReason.IRREVERSIBLE),
    ]


def test_batch_writes_are_merged_and_facts_are_not_mutated() -> None:
    facts: dict[FactKey, str] = {UN: encode_unsubscribes((Unsubscribe("a.com", 1),))}
    writes, rejections = apply_events(
        RULES,
        [
            event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="b.com", at=2),
            event(T.EMAIL_UNSUBSCRIBE, email=EMAIL.upper(), at=3),
            event(T.EMAIL_OPT_OUT_ORGANIZATION, email=EMAIL),
        ],
        facts,
    )
    assert rejections == []
    assert writes == {
        UN: encode_unsubscribes(
            (Unsubscribe("a.com", 1), Unsubscribe("b.com", 2), Unsubscribe("", 3))
        ),
        EO: FLAG_SET,
    }
    assert facts == {UN: encode_unsubscribes((Unsubscribe("a.com", 1),))}


def test_batch_equals_one_by_one() -> None:
    events = [
        event(T.SMS_OPT_IN, phone=PHONE),
        event(T.CONTACT_SILENCED, contact_id="c1", at=5),
        event(T.CONTACT_UNSILENCED, contact_id="c1", at=4),
        event(
            T.ORG_SETTINGS_CHANGED,
            at=2,
            settings=org_settings(UnsubscribeScope.ORGANIZATION),
        ),
        event(
            T.ORG_SETTINGS_CHANGED,
            at=1,
            settings=org_settings(user=UserOptOutScope.ORGANIZATION),
        ),
        event(T.CONTACT_DO_NOT_CONTACT, contact_id="c2", phone=PHONE, email=EMAIL),
    ]
    batch, _ = run(*events)
    one_by_one: dict[FactKey, str] = {}
    for ev in events:
        one_by_one, _ = run(ev, facts=one_by_one)
    assert batch == one_by_one


# -- order tolerance of reversible facts ---------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_last_writer_wins_by_occurred_at_then_event_id(reverse: bool) -> None:
    events = [
        event(T.CONTACT_SILENCED, contact_id="c1", at=10, event_id="a"),
        event(
            T.CONTACT_UNSILENCED, contact_id="c1", at=10, event_id="b"
        ),  # same instant, larger id: wins
        event(
            T.CONTACT_SILENCED, contact_id="c1", at=9, event_id="z"
        ),  # older, whatever the id
    ]
    state, rejections = run(*(reversed(events) if reverse else events))
    assert rejections == []
    assert Stamped.decode(state[contact(FactKind.SILENCED)]) == Stamped(10, "b", False)


@pytest.mark.parametrize("reverse", [False, True])
def test_settings_history_is_order_independent(reverse: bool) -> None:
    events = [
        event(
            T.ORG_SETTINGS_CHANGED,
            at=10,
            event_id="a",
            settings=org_settings(UnsubscribeScope.ORGANIZATION),
        ),
        event(
            T.ORG_SETTINGS_CHANGED,
            at=10,
            event_id="b",
            settings=org_settings(user=UserOptOutScope.ORGANIZATION),
        ),
        event(T.ORG_SETTINGS_CHANGED, at=5, event_id="c", settings=org_settings()),
    ]
    state, _ = run(*(reversed(events) if reverse else events))
    history = SettingsHistory.decode(state[OS])
    assert [c.event_id for c in history.changes] == ["c", "a", "b"]
    assert history.current() == org_settings(user=UserOptOutScope.ORGANIZATION)


def test_organizations_are_separate() -> None:
    state, _ = run(
        event(T.EMAIL_OPT_OUT_ORGANIZATION, email=EMAIL, org="org-2"),
        event(T.SMS_OPT_IN, phone=PHONE, org="org-2"),
    )
    assert set(state) == {
        key(FactKind.EMAIL_OPT_OUT_ORGANIZATION, EMAIL, org="org-2"),
        key(FactKind.SMS_CONSENT, PHONE, org="org-2"),
    }
