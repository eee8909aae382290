"""SPEC §3 decision table, every row for every channel x category, and its consequences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.unit.policy_fakes import (
    EMAIL,
    ORG,
    PHONE,
    SENDER,
    PolicyState,
    email_request,
    event,
    org_settings,
    request,
    sms_request,
)
from worker.models import (
    Category,
    Channel,
    PreferenceSource,
    SuppressionReason,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.models import PreferenceEventType as T
from worker.policy.decision import Decision, DecisionPolicy
from worker.policy.facts import FactKind

R = SuppressionReason
E_M = (Channel.EMAIL, Category.MARKETING)
E_T = (Channel.EMAIL, Category.TRANSACTIONAL)
S_M = (Channel.SMS, Category.MARKETING)
S_T = (Channel.SMS, Category.TRANSACTIONAL)
ALLOWED: tuple[tuple[R, ...], tuple[R, ...]] = ((), ())


def _only(*reasons: R) -> tuple[tuple[R, ...], tuple[R, ...]]:
    return (reasons, ())


def _bypass(*reasons: R) -> tuple[tuple[R, ...], tuple[R, ...]]:
    return ((), reasons)


def _everywhere(*reasons: R) -> dict[tuple[Channel, Category], Any]:
    return {cell: _only(*reasons) for cell in (E_M, E_T, S_M, S_T)}


def _email_opt_out(reason: R) -> dict[tuple[Channel, Category], Any]:
    """Rows 4-6: marketing email suppressed, transactional email allowed but reported, SMS untouched."""
    return {E_M: _only(reason), E_T: _bypass(reason), S_M: ALLOWED, S_T: ALLOWED}


@dataclass
class Case:
    events: list[Any]
    expect: dict[tuple[Channel, Category], tuple[tuple[R, ...], tuple[R, ...]]]
    email: dict[str, Any] = field(default_factory=dict)  # request overrides
    sms: dict[str, Any] = field(default_factory=dict)
    sms_opted_in: bool = True  # so SMS is allowed unless the row is about SMS consent


CASES: dict[str, Case] = {
    "no facts": Case([], _everywhere()),
    # Row 1
    "1 invalid to": Case(
        [],
        _everywhere(R.INVALID_ADDRESS),
        email={"to": "jane.doe@"},
        sms={"to": "555-01"},
    ),
    "1 invalid email from": Case(
        [],
        {
            E_M: _only(R.INVALID_ADDRESS),
            E_T: _only(R.INVALID_ADDRESS),
            S_M: ALLOWED,
            S_T: ALLOWED,
        },
        email={"from_": "officer at acme"},
    ),
    "1 SMS from is not validated": Case(
        [], _everywhere(), sms={"from_": "short code 55555"}
    ),
    # Row 2
    "2 do not contact (contact only)": Case(
        [event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1")],
        _everywhere(R.DO_NOT_CONTACT),
    ),
    "2 do not contact with email and phone": Case(
        [event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1", email=EMAIL, phone=PHONE)],
        {
            E_M: _only(R.DO_NOT_CONTACT, R.EMAIL_OPT_OUT_ORGANIZATION),
            E_T: ((R.DO_NOT_CONTACT,), (R.EMAIL_OPT_OUT_ORGANIZATION,)),
            S_M: _only(R.DO_NOT_CONTACT, R.SMS_OPT_OUT),
            S_T: _only(R.DO_NOT_CONTACT, R.SMS_OPT_OUT),
        },
    ),
    "2 do not contact of another contact": Case(
        [event(T.CONTACT_DO_NOT_CONTACT, contact_id="c9")], _everywhere()
    ),
    # Row 3
    "3 silenced": Case(
        [event(T.CONTACT_SILENCED, contact_id="c1")], _everywhere(R.SILENCED)
    ),
    "3 silenced then unsilenced": Case(
        [
            event(T.CONTACT_SILENCED, contact_id="c1", at=1),
            event(T.CONTACT_UNSILENCED, contact_id="c1", at=2),
        ],
        _everywhere(),
    ),
    # Row 4
    "4 organization opt-out": Case(
        [event(T.EMAIL_OPT_OUT_ORGANIZATION, email=EMAIL)],
        _email_opt_out(R.EMAIL_OPT_OUT_ORGANIZATION),
    ),
    "4 unsubscribe, ORGANIZATION scope": Case(
        [
            event(
                T.ORG_SETTINGS_CHANGED,
                at=1,
                settings=org_settings(UnsubscribeScope.ORGANIZATION),
            ),
            event(T.EMAIL_UNSUBSCRIBE, at=2, email=EMAIL, domain="other.com"),
        ],
        _email_opt_out(R.EMAIL_OPT_OUT_ORGANIZATION),
    ),
    "4 unsubscribe, DOMAIN scope, no domain": Case(
        [event(T.EMAIL_UNSUBSCRIBE, email=EMAIL)],
        _email_opt_out(R.EMAIL_OPT_OUT_ORGANIZATION),
    ),
    # Row 5
    "5 domain opt-out": Case(
        [event(T.EMAIL_OPT_OUT_DOMAIN, email=EMAIL, domain="acme.com")],
        _email_opt_out(R.EMAIL_OPT_OUT_DOMAIN),
    ),
    "5 domain opt-out, other sender domain (DBA)": Case(
        [event(T.EMAIL_OPT_OUT_DOMAIN, email=EMAIL, domain="acme-mortgage.com")],
        _everywhere(),
    ),
    "5 unsubscribe, DOMAIN scope (default)": Case(
        [event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="acme.com")],
        _email_opt_out(R.EMAIL_OPT_OUT_DOMAIN),
    ),
    "5 unsubscribe, DOMAIN scope, other domain": Case(
        [event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="other.com")], _everywhere()
    ),
    # Row 6
    "6 user opt-out": Case(
        [event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u1")],
        _email_opt_out(R.EMAIL_OPT_OUT_USER),
    ),
    "6 other user's opt-out, USER scope": Case(
        [event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u2")], _everywhere()
    ),
    "6 other user's opt-out, ORGANIZATION scope": Case(
        [
            event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u2"),
            event(
                T.ORG_SETTINGS_CHANGED,
                settings=org_settings(user=UserOptOutScope.ORGANIZATION),
            ),
        ],
        _email_opt_out(R.EMAIL_OPT_OUT_USER),
    ),
    # Row 7
    "7 ok to email false": Case(
        [event(T.CONTACT_OK_TO_EMAIL_SET, contact_id="c1", ok_to_email=False)],
        {
            E_M: _only(R.OK_TO_EMAIL_FALSE),
            E_T: _only(R.OK_TO_EMAIL_FALSE),
            S_M: ALLOWED,
            S_T: ALLOWED,
        },
    ),
    "7 ok to email true": Case(
        [event(T.CONTACT_OK_TO_EMAIL_SET, contact_id="c1", ok_to_email=True)],
        _everywhere(),
    ),
    "7 ok to email false then true": Case(
        [
            event(T.CONTACT_OK_TO_EMAIL_SET, contact_id="c1", ok_to_email=False, at=1),
            event(
                T.CONTACT_OK_TO_EMAIL_SET,
                contact_id="c1",
                ok_to_email=True,
                at=2,
                source=PreferenceSource.IMPORT,
            ),
        ],
        _everywhere(),
    ),
    # Row 8
    "8 SMS opt-out": Case(
        [event(T.SMS_OPT_OUT, phone=PHONE)],
        {
            E_M: ALLOWED,
            E_T: ALLOWED,
            S_M: _only(R.SMS_OPT_OUT),
            S_T: _only(R.SMS_OPT_OUT),
        },
    ),
    # Row 9
    "9 never opted in": Case(
        [],
        {
            E_M: ALLOWED,
            E_T: ALLOWED,
            S_M: _only(R.SMS_NOT_OPTED_IN),
            S_T: _only(R.SMS_NOT_OPTED_IN),
        },
        sms_opted_in=False,
    ),
    "9 opted in for another number": Case(
        [event(T.SMS_OPT_IN, phone="+12025550199")],
        {
            E_M: ALLOWED,
            E_T: ALLOWED,
            S_M: _only(R.SMS_NOT_OPTED_IN),
            S_T: _only(R.SMS_NOT_OPTED_IN),
        },
        sms_opted_in=False,
    ),
}


@pytest.mark.parametrize("cell", [E_M, E_T, S_M, S_T], ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("name", list(CASES))
def test_decision_table(name: str, cell: tuple[Channel, Category]) -> None:
    case = CASES[name]
    state = PolicyState()
    if case.sms_opted_in:
        assert state.apply(event(T.SMS_OPT_IN, phone=PHONE, at=0)) == []
    assert state.apply(*case.events) == []
    channel, category = cell
    decision = state.decide(
        request(
            channel, category, **(case.email if channel is Channel.EMAIL else case.sms)
        )
    )
    reasons, bypassed = case.expect[cell]
    assert (decision.reasons, decision.bypassed) == (reasons, bypassed)
    assert decision.allowed is (not reasons)
    assert decision.primary_reason == (reasons[0] if reasons else None)
    assert set(decision.details) == {r.value for r in reasons}


def _everything(state: PolicyState) -> None:
    state.apply(
        event(T.SMS_OPT_IN, phone=PHONE),
        event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1", email=EMAIL, phone=PHONE),
        event(T.CONTACT_SILENCED, contact_id="c1", at=7, event_id="ev-s"),
        event(T.EMAIL_OPT_OUT_DOMAIN, email=EMAIL, domain="acme.com"),
        event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u1"),
        event(
            T.CONTACT_OK_TO_EMAIL_SET,
            contact_id="c1",
            ok_to_email=False,
            at=8,
            event_id="ev-k",
        ),
    )


def test_all_applying_reasons_in_table_order() -> None:
    state = PolicyState()
    _everything(state)
    decision = state.decide(email_request())
    assert decision.reasons == (
        R.DO_NOT_CONTACT,
        R.SILENCED,
        R.EMAIL_OPT_OUT_ORGANIZATION,
        R.EMAIL_OPT_OUT_DOMAIN,
        R.EMAIL_OPT_OUT_USER,
        R.OK_TO_EMAIL_FALSE,
    )
    assert decision.primary_reason is R.DO_NOT_CONTACT
    assert decision.details == {
        "DO_NOT_CONTACT": "contact=c1",
        "SILENCED": "contact=c1 stamp=7/ev-s",
        "EMAIL_OPT_OUT_ORGANIZATION": "opt-out",
        "EMAIL_OPT_OUT_DOMAIN": "domain=acme.com",
        "EMAIL_OPT_OUT_USER": "user=u1",
        "OK_TO_EMAIL_FALSE": "contact=c1 stamp=8/ev-k",
    }
    transactional = state.decide(email_request(category=Category.TRANSACTIONAL))
    assert transactional.reasons == (R.DO_NOT_CONTACT, R.SILENCED, R.OK_TO_EMAIL_FALSE)
    assert transactional.bypassed == (
        R.EMAIL_OPT_OUT_ORGANIZATION,
        R.EMAIL_OPT_OUT_DOMAIN,
        R.EMAIL_OPT_OUT_USER,
    )
    assert state.decide(sms_request()).reasons == (
        R.DO_NOT_CONTACT,
        R.SILENCED,
        R.SMS_OPT_OUT,
    )


def test_details_never_hold_addresses_or_numbers() -> None:
    state = PolicyState()
    _everything(state)
    state.apply(event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="acme.com", at=9))
    decisions = [
        state.decide(email_request()),
        state.decide(email_request(to="Jane.Doe@")),
        state.decide(email_request(from_="nope")),
        state.decide(sms_request()),
        state.decide(sms_request(to="12")),
    ]
    for decision in decisions:
        for detail in decision.details.values():
            assert (
                "@" not in detail
                and "jane" not in detail
                and "5550101" not in detail
                and detail != "12"
            )


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"to": "x"}, "field=to"),
        ({"from_": "x"}, "field=from"),
        ({"to": "x", "from_": "y"}, "field=to,from"),
    ],
)
def test_invalid_address_detail_names_the_field(
    kwargs: dict[str, str], detail: str
) -> None:
    assert PolicyState().decide(email_request(**kwargs)).details == {
        "INVALID_ADDRESS": detail
    }


def test_invalid_to_keeps_contact_rows_and_drops_address_rows() -> None:
    state = PolicyState()
    state.apply(
        event(T.CONTACT_SILENCED, contact_id="c1"),
        event(T.CONTACT_OK_TO_EMAIL_SET, contact_id="c1", ok_to_email=False),
        event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1"),
    )
    assert state.decide(email_request(to="nope")).reasons == (
        R.INVALID_ADDRESS,
        R.DO_NOT_CONTACT,
        R.SILENCED,
        R.OK_TO_EMAIL_FALSE,
    )
    # Row 9 is keyed by phone: it cannot apply to a number that is not one.
    assert state.decide(sms_request(to="nope")).reasons == (
        R.INVALID_ADDRESS,
        R.DO_NOT_CONTACT,
        R.SILENCED,
    )


def test_invalid_from_still_checks_address_rows_without_a_domain() -> None:
    state = PolicyState()
    state.apply(
        event(T.EMAIL_OPT_OUT_ORGANIZATION, email=EMAIL),
        event(T.EMAIL_OPT_OUT_DOMAIN, email=EMAIL, domain="acme.com"),
        event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u1"),
    )
    decision = state.decide(email_request(from_="no-domain"))
    assert decision.reasons == (
        R.INVALID_ADDRESS,
        R.EMAIL_OPT_OUT_ORGANIZATION,
        R.EMAIL_OPT_OUT_USER,
    )


# -- prepared keys ---------------------------------------------------------


def test_email_keys() -> None:
    prepared = DecisionPolicy().prepare(
        email_request(to=" Jane.Doe@Example.com", from_="X@ACME.com")
    )
    assert (
        prepared.to == EMAIL
        and prepared.sender_domain == "acme.com"
        and not prepared.invalid
    )
    assert len(set(prepared.keys)) == len(prepared.keys)
    assert {k.org_id for k in prepared.keys} == {ORG}
    assert {(k.kind, k.subject) for k in prepared.keys} == {
        (FactKind.DO_NOT_CONTACT, ("c1",)),
        (FactKind.SILENCED, ("c1",)),
        (FactKind.OK_TO_EMAIL, ("c1",)),
        (FactKind.EMAIL_OPT_OUT_ORGANIZATION, (EMAIL,)),
        (FactKind.EMAIL_OPT_OUT_DOMAIN, (EMAIL, "acme.com")),
        (FactKind.EMAIL_OPT_OUT_USER, (EMAIL, "u1")),
        (FactKind.EMAIL_OPT_OUT_ANY_USER, (EMAIL,)),
        (FactKind.EMAIL_UNSUBSCRIBES, (EMAIL,)),
        (FactKind.ORG_SETTINGS, ()),
    }


def test_email_keys_with_invalid_addresses() -> None:
    policy = DecisionPolicy()
    invalid_to = policy.prepare(email_request(to="nope"))
    assert invalid_to.invalid and invalid_to.to is None
    assert {k.kind for k in invalid_to.keys} == {
        FactKind.DO_NOT_CONTACT,
        FactKind.SILENCED,
        FactKind.OK_TO_EMAIL,
    }
    invalid_from = policy.prepare(email_request(from_="nope"))
    assert (
        invalid_from.invalid
        and invalid_from.to == EMAIL
        and invalid_from.sender_domain is None
    )
    assert FactKind.EMAIL_OPT_OUT_DOMAIN not in {k.kind for k in invalid_from.keys}
    assert FactKind.EMAIL_OPT_OUT_ORGANIZATION in {k.kind for k in invalid_from.keys}


def test_sms_keys() -> None:
    policy = DecisionPolicy()
    prepared = policy.prepare(sms_request(to="(202) 555-0101", from_="not validated"))
    assert (
        prepared.to == PHONE and prepared.sender_domain is None and not prepared.invalid
    )
    assert {(k.kind, k.subject) for k in prepared.keys} == {
        (FactKind.DO_NOT_CONTACT, ("c1",)),
        (FactKind.SILENCED, ("c1",)),
        (FactKind.SMS_CONSENT, (PHONE,)),
    }
    invalid = policy.prepare(sms_request(to="nope"))
    assert invalid.invalid and {k.kind for k in invalid.keys} == {
        FactKind.DO_NOT_CONTACT,
        FactKind.SILENCED,
    }


def test_missing_fact_keys_mean_absent_facts() -> None:
    policy = DecisionPolicy()
    assert policy.decide(policy.prepare(email_request()), {}).allowed
    assert policy.decide(policy.prepare(sms_request()), {}).reasons == (
        R.SMS_NOT_OPTED_IN,
    )


def test_unknown_sms_consent_value_is_not_an_opt_in() -> None:
    policy = DecisionPolicy()
    prepared = policy.prepare(sms_request())
    facts = {
        key: "garbage" for key in prepared.keys if key.kind is FactKind.SMS_CONSENT
    }
    assert policy.decide(prepared, facts).reasons == (R.SMS_NOT_OPTED_IN,)


def test_phone_region() -> None:
    state = PolicyState(region="GB")
    state.apply(event(T.SMS_OPT_IN, phone="020 7946 0958"))
    assert state.decide(sms_request(to="+44 20 7946 0958")).allowed
    assert state.decide(sms_request(to="(020) 7946-0958")).allowed


# -- organizations ---------------------------------------------------------


def test_nothing_leaks_across_organizations() -> None:
    state = PolicyState()
    _everything(state)
    state.apply(
        event(
            T.ORG_SETTINGS_CHANGED,
            settings=org_settings(
                UnsubscribeScope.ORGANIZATION, UserOptOutScope.ORGANIZATION
            ),
        )
    )
    state.apply(event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, at=5_000))
    assert state.decide(email_request(org="org-2")).allowed
    assert state.decide(sms_request(org="org-2")).reasons == (R.SMS_NOT_OPTED_IN,)
    # ... and org-2's settings do not reach org-1's opt-outs.
    other = PolicyState()
    other.apply(
        event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u2"),
        event(
            T.ORG_SETTINGS_CHANGED,
            org="org-2",
            settings=org_settings(user=UserOptOutScope.ORGANIZATION),
        ),
    )
    assert other.decide(email_request()).allowed


# -- duplicates: several contacts with one address ------------------------


@pytest.fixture
def duplicates() -> PolicyState:
    state = PolicyState()
    state.apply(event(T.SMS_OPT_IN, phone=PHONE))
    return state


def test_opt_outs_reach_duplicates(duplicates: PolicyState) -> None:
    duplicates.apply(
        event(T.EMAIL_OPT_OUT_ORGANIZATION, email=EMAIL),
        event(T.SMS_OPT_OUT, phone=PHONE),
    )
    for contact in ("c1", "c2"):
        assert duplicates.decide(email_request(contact=contact)).reasons == (
            R.EMAIL_OPT_OUT_ORGANIZATION,
        )
        assert duplicates.decide(sms_request(contact=contact)).reasons == (
            R.SMS_OPT_OUT,
        )


@pytest.mark.parametrize(
    ("contact_event", "reason"),
    [
        (lambda: event(T.CONTACT_SILENCED, contact_id="c1"), R.SILENCED),
        (
            lambda: event(
                T.CONTACT_OK_TO_EMAIL_SET, contact_id="c1", ok_to_email=False
            ),
            R.OK_TO_EMAIL_FALSE,
        ),
        (lambda: event(T.CONTACT_DO_NOT_CONTACT, contact_id="c1"), R.DO_NOT_CONTACT),
    ],
    ids=["silenced", "ok-to-email", "do-not-contact-list"],
)
def test_contact_facts_do_not_reach_duplicates(
    duplicates: PolicyState, contact_event: Any, reason: R
) -> None:
    duplicates.apply(contact_event())
    assert reason in duplicates.decide(email_request(contact="c1")).reasons
    for req in (
        email_request(contact="c2"),
        email_request(contact="c2", category=Category.TRANSACTIONAL),
        sms_request(contact="c2"),
    ):
        decision = duplicates.decide(req)
        assert decision.allowed and decision.bypassed == ()


def test_do_not_contact_opt_outs_reach_duplicates(duplicates: PolicyState) -> None:
    duplicates.apply(
        event(
            T.CONTACT_DO_NOT_CONTACT,
            contact_id="c1",
            email=" JANE.DOE@example.com",
            phone="(202) 555-0101",
        )
    )
    # The contact itself: everything blocked.
    assert duplicates.decide(
        email_request(contact="c1", category=Category.TRANSACTIONAL)
    ).reasons == (R.DO_NOT_CONTACT,)
    # A duplicate: marketing email and SMS blocked, transactional email still allowed.
    assert duplicates.decide(email_request(contact="c2")).reasons == (
        R.EMAIL_OPT_OUT_ORGANIZATION,
    )
    transactional = duplicates.decide(
        email_request(contact="c2", category=Category.TRANSACTIONAL)
    )
    assert transactional.allowed and transactional.bypassed == (
        R.EMAIL_OPT_OUT_ORGANIZATION,
    )
    for category in Category:
        assert duplicates.decide(
            sms_request(contact="c2", category=category)
        ).reasons == (R.SMS_OPT_OUT,)


# -- organization settings -------------------------------------------------


def _domain_and_org(state: PolicyState, sender: str = SENDER) -> tuple[R, ...]:
    return state.decide(email_request(from_=sender)).reasons


def test_unsubscribe_takes_the_scope_in_force_when_it_happened() -> None:
    state = PolicyState()
    state.apply(event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="acme.com", at=100))
    assert _domain_and_org(state) == (R.EMAIL_OPT_OUT_DOMAIN,)
    assert state.decide(email_request(from_="x@other.com")).allowed
    # A later change of scope does not alter the recorded unsubscribe ...
    state.apply(
        event(
            T.ORG_SETTINGS_CHANGED,
            at=200,
            settings=org_settings(UnsubscribeScope.ORGANIZATION),
        )
    )
    assert _domain_and_org(state) == (R.EMAIL_OPT_OUT_DOMAIN,)
    assert state.decide(email_request(from_="x@other.com")).allowed
    # ... but applies to the next one.
    state.apply(event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="acme.com", at=300))
    assert _domain_and_org(state) == (
        R.EMAIL_OPT_OUT_ORGANIZATION,
        R.EMAIL_OPT_OUT_DOMAIN,
    )
    assert state.decide(email_request(from_="x@other.com")).reasons == (
        R.EMAIL_OPT_OUT_ORGANIZATION,
    )
    # Switching back does not narrow it either.
    state.apply(
        event(
            T.ORG_SETTINGS_CHANGED,
            at=400,
            settings=org_settings(UnsubscribeScope.DOMAIN),
        )
    )
    assert state.decide(email_request(from_="x@other.com")).reasons == (
        R.EMAIL_OPT_OUT_ORGANIZATION,
    )


def test_unsubscribe_resolution_does_not_depend_on_application_order() -> None:
    # The settings change happened first but is applied after the unsubscribe
    # (they are on different Kafka keys).
    state = PolicyState()
    state.apply(event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="acme.com", at=100))
    state.apply(
        event(
            T.ORG_SETTINGS_CHANGED,
            at=50,
            settings=org_settings(UnsubscribeScope.ORGANIZATION),
        )
    )
    decision = state.decide(email_request(from_="x@other.com"))
    assert decision.reasons == (R.EMAIL_OPT_OUT_ORGANIZATION,)
    assert decision.details == {
        "EMAIL_OPT_OUT_ORGANIZATION": "unsubscribe@100 scope=ORGANIZATION"
    }


def test_settings_change_at_the_same_instant_is_in_force() -> None:
    state = PolicyState()
    state.apply(
        event(
            T.ORG_SETTINGS_CHANGED,
            at=100,
            settings=org_settings(UnsubscribeScope.ORGANIZATION),
        ),
        event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="acme.com", at=100),
    )
    assert state.decide(email_request(from_="x@other.com")).reasons == (
        R.EMAIL_OPT_OUT_ORGANIZATION,
    )


def test_settings_tie_is_broken_by_event_id() -> None:
    organization = event(
        T.ORG_SETTINGS_CHANGED,
        at=50,
        event_id="b",
        settings=org_settings(UnsubscribeScope.ORGANIZATION),
    )
    domain = event(
        T.ORG_SETTINGS_CHANGED,
        at=50,
        event_id="a",
        settings=org_settings(UnsubscribeScope.DOMAIN),
    )
    for order in ((organization, domain), (domain, organization)):
        state = PolicyState()
        state.apply(
            *order, event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="acme.com", at=100)
        )
        assert state.decide(email_request(from_="x@other.com")).reasons == (
            R.EMAIL_OPT_OUT_ORGANIZATION,
        )


def test_unsubscribe_without_domain_details() -> None:
    state = PolicyState()
    state.apply(event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, at=100))
    assert state.decide(email_request()).details == {
        "EMAIL_OPT_OUT_ORGANIZATION": "unsubscribe@100 scope=DOMAIN domain=none"
    }


def test_unsubscribe_with_domain_details() -> None:
    state = PolicyState()
    state.apply(event(T.EMAIL_UNSUBSCRIBE, email=EMAIL, domain="ACME.com", at=100))
    assert state.decide(email_request()).details == {
        "EMAIL_OPT_OUT_DOMAIN": "unsubscribe@100 scope=DOMAIN domain=acme.com"
    }


def test_user_scope_is_evaluated_at_decision_time() -> None:
    state = PolicyState()
    state.apply(event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u2", at=100))
    u1, u2 = email_request(user="u1"), email_request(user="u2")
    assert state.decide(u1).allowed
    assert state.decide(u2).reasons == (R.EMAIL_OPT_OUT_USER,)

    state.apply(
        event(
            T.ORG_SETTINGS_CHANGED,
            at=200,
            settings=org_settings(user=UserOptOutScope.ORGANIZATION),
        )
    )
    decision = state.decide(u1)
    assert decision.reasons == (R.EMAIL_OPT_OUT_USER,)
    assert decision.details == {"EMAIL_OPT_OUT_USER": "any-user scope=ORGANIZATION"}
    assert state.decide(
        email_request(user="u1", category=Category.TRANSACTIONAL)
    ).bypassed == (R.EMAIL_OPT_OUT_USER,)
    assert state.decide(u2).details == {"EMAIL_OPT_OUT_USER": "user=u2"}

    state.apply(
        event(
            T.ORG_SETTINGS_CHANGED,
            at=300,
            settings=org_settings(user=UserOptOutScope.USER),
        )
    )
    assert state.decide(u1).allowed
    assert state.decide(u2).reasons == (R.EMAIL_OPT_OUT_USER,)

    # The latest change by occurred_at is in force, whatever the order of application.
    state.apply(
        event(
            T.ORG_SETTINGS_CHANGED,
            at=250,
            settings=org_settings(user=UserOptOutScope.ORGANIZATION),
        )
    )
    assert state.decide(u1).allowed


def test_user_scope_applies_only_to_the_address_opted_out() -> None:
    state = PolicyState()
    state.apply(
        event(T.EMAIL_OPT_OUT_USER, email=EMAIL, user_id="u2"),
        event(
            T.ORG_SETTINGS_CHANGED,
            settings=org_settings(user=UserOptOutScope.ORGANIZATION),
        ),
    )
    assert state.decide(email_request(to="someone.else@example.com")).allowed


# -- last writer wins ------------------------------------------------------


@pytest.mark.parametrize("apply_later_first", [False, True])
def test_silence_is_last_writer_wins_by_occurred_at(apply_later_first: bool) -> None:
    silenced = event(T.CONTACT_SILENCED, contact_id="c1", at=10)
    unsilenced = event(T.CONTACT_UNSILENCED, contact_id="c1", at=5)
    state = PolicyState()
    state.apply(
        *((silenced, unsilenced) if apply_later_first else (unsilenced, silenced))
    )
    assert state.decide(email_request()).reasons == (R.SILENCED,)


@pytest.mark.parametrize("winner", ["silenced", "unsilenced"])
@pytest.mark.parametrize("apply_winner_first", [False, True])
def test_silence_tie_is_broken_by_event_id(
    winner: str, apply_winner_first: bool
) -> None:
    silenced = event(
        T.CONTACT_SILENCED,
        contact_id="c1",
        at=10,
        event_id="b" if winner == "silenced" else "a",
    )
    unsilenced = event(
        T.CONTACT_UNSILENCED,
        contact_id="c1",
        at=10,
        event_id="b" if winner == "unsilenced" else "a",
    )
    first, second = (
        (silenced, unsilenced) if winner == "silenced" else (unsilenced, silenced)
    )
    state = PolicyState()
    state.apply(*((first, second) if apply_winner_first else (second, first)))
    assert state.decide(email_request()).allowed is (winner == "unsilenced")


@pytest.mark.parametrize("apply_later_first", [False, True])
def test_ok_to_email_is_last_writer_wins(apply_later_first: bool) -> None:
    off = event(T.CONTACT_OK_TO_EMAIL_SET, contact_id="c1", ok_to_email=False, at=5)
    on = event(T.CONTACT_OK_TO_EMAIL_SET, contact_id="c1", ok_to_email=True, at=10)
    state = PolicyState()
    state.apply(*((on, off) if apply_later_first else (off, on)))
    assert state.decide(email_request()).allowed


# -- normalisation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("event_email", "request_to", "blocked"),
    [
        (" Jane.Doe@EXAMPLE.com ", "jane.doe@example.com", True),
        ("jane.doe@example.com", "  JANE.DOE@Example.Com", True),
        (
            "jane.doe@example.com",
            "jane.doe+news@example.com",
            False,
        ),  # plus-tags are kept
        ("jane.doe+news@example.com", "jane.doe@example.com", False),
        ("jane@bücher.de", "jane@xn--bcher-kva.de", True),
        ("jane@XN--BCHER-KVA.de", "Jane@Bücher.de", True),
    ],
)
def test_email_normalisation_in_decisions(
    event_email: str, request_to: str, blocked: bool
) -> None:
    state = PolicyState()
    state.apply(event(T.EMAIL_OPT_OUT_ORGANIZATION, email=event_email))
    assert (not state.decide(email_request(to=request_to)).allowed) is blocked


def test_idna_sender_domain_matches_event_domain() -> None:
    state = PolicyState()
    state.apply(event(T.EMAIL_OPT_OUT_DOMAIN, email=EMAIL, domain="Bücher.de"))
    assert state.decide(email_request(from_="officer@xn--bcher-kva.de")).reasons == (
        R.EMAIL_OPT_OUT_DOMAIN,
    )
    assert state.decide(email_request(from_="officer@bücher.de")).reasons == (
        R.EMAIL_OPT_OUT_DOMAIN,
    )


@pytest.mark.parametrize(
    "request_to", ["+12025550101", "(202) 555-0101", "1 202 555 0101", " 202.555.0101 "]
)
def test_phone_normalisation_in_decisions(request_to: str) -> None:
    state = PolicyState()
    state.apply(event(T.SMS_OPT_IN, phone="202-555-0101"))
    assert state.decide(sms_request(to=request_to)).allowed
    state.apply(event(T.SMS_OPT_OUT, phone="+1 (202) 555 0101"))
    assert state.decide(sms_request(to=request_to)).reasons == (R.SMS_OPT_OUT,)


def test_decision_properties() -> None:
    allowed = Decision((), {}, ())
    assert allowed.allowed and allowed.primary_reason is None
    suppressed = Decision((R.SILENCED, R.OK_TO_EMAIL_FALSE), {}, ())
    assert not suppressed.allowed and suppressed.primary_reason is R.SILENCED
