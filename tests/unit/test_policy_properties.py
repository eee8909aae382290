"""SPEC §4 order tolerance, as a property.

A preference log over a few organizations, addresses, phones, contacts and
users is applied once in its own order (the producers' order; also what
replaying the whole topic into an empty store does). Then the same log is
re-delivered the way Kafka may: interleaved across subjects (one subject = one
Kafka key, ``kafka_key(event)``, whose events keep their order;
SMS events keep none, since consent is judged in event time), some events
delivered twice, and applied in batches of arbitrary size. Both must end in
the same facts and the same decisions for a fixed set of requests.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceSource,
    SendRequest,
    UnsubscribeScope,
    UserOptOutScope,
)
from worker.models import PreferenceEventType as T
from worker.policy.decision import Decision, DecisionPolicy
from worker.policy.event_keys import kafka_key
from worker.policy.events import PreferenceRules, apply_events, subject_key
from worker.policy.facts import FactKey

RULES = PreferenceRules()
POLICY = DecisionPolicy()

ORGS = ("o1", "o2")
USERS = ("u1", "u2")
# Several spellings of one address: they normalise to one fact but travel on
# different Kafka keys, so their relative order is not kept. Email facts are
# monotonic, so this must not matter.
EMAILS = {
    "ann": ("ann@example.com", " ANN@Example.com"),
    "ann+news": ("ann+news@example.com",),
    "bob": ("bob@bücher.de", "Bob@XN--BCHER-KVA.de"),
}
# Phone numbers in several spellings. SMS consent is judged in event time
# (SPEC §4), so events of one number may be applied in any order, whatever
# Kafka key or partition their producer gave them: the property below delivers
# SMS events in any order at all, not only in their subject's order.
PHONES = {"p1": "+12025550101", "p2": "+12025550102"}
PHONE_SPELLINGS = {
    "p1": ("+12025550101", "(202) 555-0101"),
    "p2": ("+12025550102", "202.555.0102"),
}
# Contacts and what they hold; c1/c2 share an address and c1/c3 a phone (duplicates).
CONTACTS = {
    "c1": ("ann", "p1"),
    "c2": ("ann", "p2"),
    "c3": ("bob", "p1"),
    "c4": (None, None),
}
DOMAINS = ("acme.com", "Bücher.de", "other.com")
SENDERS = ("officer@acme.com", "officer@xn--bcher-kva.de", "officer@elsewhere.com")

EMAIL_TYPES = (
    T.EMAIL_OPT_OUT_USER,
    T.EMAIL_OPT_OUT_ORGANIZATION,
    T.EMAIL_OPT_OUT_DOMAIN,
    T.EMAIL_UNSUBSCRIBE,
)
SMS_TYPES = (T.SMS_OPT_IN, T.SMS_OPT_OUT)
# Weights: opt-ins and reversible facts often, do-not-contact (which settles everything) rarely.
TYPE_WEIGHTS = (
    [T.EMAIL_OPT_OUT_USER, T.EMAIL_OPT_OUT_ORGANIZATION, T.EMAIL_OPT_OUT_DOMAIN]
    + [T.EMAIL_UNSUBSCRIBE] * 3
    + [T.SMS_OPT_IN] * 3
    + [T.SMS_OPT_OUT] * 2
    + [T.CONTACT_SILENCED, T.CONTACT_UNSILENCED] * 2
    + [T.CONTACT_DO_NOT_CONTACT]
    + [T.CONTACT_OK_TO_EMAIL_SET] * 3
    + [T.ORG_SETTINGS_CHANGED] * 3
)


@st.composite
def preference_events(draw: st.DrawFn, index: int) -> PreferenceEvent:
    kind = draw(st.sampled_from(TYPE_WEIGHTS))
    fields: dict[str, object] = {}
    source = PreferenceSource.API
    if kind in EMAIL_TYPES:
        fields["email"] = draw(
            st.sampled_from(EMAILS[draw(st.sampled_from(sorted(EMAILS)))])
        )
        if kind is T.EMAIL_OPT_OUT_USER:
            fields["user_id"] = draw(st.sampled_from(USERS))
        elif kind is T.EMAIL_OPT_OUT_DOMAIN:
            fields["domain"] = draw(st.sampled_from(DOMAINS))
        elif kind is T.EMAIL_UNSUBSCRIBE:
            fields["domain"] = draw(st.sampled_from((None, *DOMAINS)))
    elif kind in SMS_TYPES:
        fields["phone"] = draw(st.sampled_from(PHONE_SPELLINGS[draw(st.sampled_from(sorted(PHONES)))]))
    elif kind is T.ORG_SETTINGS_CHANGED:
        fields["settings"] = OrgSettings(
            draw(st.sampled_from(UnsubscribeScope)),
            draw(st.sampled_from(UserOptOutScope)),
        )
    else:
        contact_id = draw(st.sampled_from(sorted(CONTACTS)))
        fields["contact_id"] = contact_id
        if kind is T.CONTACT_DO_NOT_CONTACT:
            email, phone = CONTACTS[contact_id]
            if email is not None and draw(st.booleans()):
                fields["email"] = draw(st.sampled_from(EMAILS[email]))
            if phone is not None and draw(st.booleans()):
                fields["phone"] = draw(st.sampled_from(PHONE_SPELLINGS[phone]))
        elif kind is T.CONTACT_OK_TO_EMAIL_SET:
            fields["ok_to_email"] = draw(st.booleans())
            source = draw(
                st.sampled_from(
                    (
                        PreferenceSource.API,
                        PreferenceSource.IMPORT,
                        PreferenceSource.USER,
                    )
                )
            )
    if fields and draw(st.integers(0, 19)) == 0:
        fields[draw(st.sampled_from(sorted(fields)))] = None  # usually MISSING_FIELD
    return PreferenceEvent(
        # Unique ids whose order differs from the log's, so ties are broken both ways.
        event_id=f"{draw(st.sampled_from('xyz'))}{index:03d}",
        org_id=draw(st.sampled_from(ORGS)),
        occurred_at=draw(st.integers(0, 3)),  # a small range: many LWW ties
        source=source,
        type=kind,
        **fields,  # type: ignore[arg-type]
    )


@st.composite
def event_logs(draw: st.DrawFn) -> list[PreferenceEvent]:
    size = draw(st.integers(1, 30))
    return [draw(preference_events(i)) for i in range(size)]


def _probes() -> list[SendRequest]:
    probes = []
    for org in ORGS:
        for contact_id in CONTACTS:
            for user in USERS:
                for to in (
                    "ann@example.com",
                    "ann+news@example.com",
                    "bob@xn--bcher-kva.de",
                ):
                    for sender in SENDERS:
                        for category in Category:
                            probes.append(
                                SendRequest(
                                    f"m{len(probes)}",
                                    org,
                                    user,
                                    contact_id,
                                    Channel.EMAIL,
                                    category,
                                    to,
                                    sender,
                                    0,
                                )
                            )
            for to in PHONES.values():
                probes.append(
                    SendRequest(
                        f"m{len(probes)}",
                        org,
                        "u1",
                        contact_id,
                        Channel.SMS,
                        Category.MARKETING,
                        to,
                        "55555",
                        0,
                    )
                )
    return probes


PROBES = [POLICY.prepare(probe) for probe in _probes()]


def _decisions(state: dict[FactKey, str]) -> list[Decision]:
    return [POLICY.decide(prepared, state) for prepared in PROBES]


def _apply(events: list[PreferenceEvent], batch_sizes: list[int]) -> dict[FactKey, str]:
    state: dict[FactKey, str] = {}
    start = 0
    for size in batch_sizes:
        writes, _ = apply_events(RULES, events[start : start + size], state)
        state.update(writes)
        start += size
    writes, _ = apply_events(RULES, events[start:], state)
    state.update(writes)
    return state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=event_logs(), data=st.data())
def test_state_converges_under_redelivery(
    log: list[PreferenceEvent], data: st.DataObject
) -> None:
    expected = _apply(log, [])
    expected_decisions = _decisions(expected)

    by_subject: dict[str, list[PreferenceEvent]] = defaultdict(list)
    for index, event in enumerate(log):
        # An SMS event is a subject of its own: nothing keeps its order.
        subject = f"sms-{index}" if event.type in SMS_TYPES else kafka_key(event)
        by_subject[subject].append(event)

    # Redeliveries, each later in its subject's order than the original.
    for sequence in by_subject.values():
        for index in sorted(
            set(data.draw(st.lists(st.integers(0, len(sequence) - 1), max_size=2))),
            reverse=True,
        ):
            original = sequence[index]
            position = data.draw(st.integers(index + 1, len(sequence)))
            sequence.insert(position, original)

    # Any interleaving of the subjects that keeps each subject's order.
    queues = [list(sequence) for sequence in by_subject.values()]
    delivered: list[PreferenceEvent] = []
    while queues:
        queue = queues[data.draw(st.integers(0, len(queues) - 1))]
        delivered.append(queue.pop(0))
        queues = [q for q in queues if q]

    batch_sizes = data.draw(st.lists(st.integers(1, 8), max_size=len(delivered)))
    state = _apply(delivered, batch_sizes)

    assert state == expected
    assert _decisions(state) == expected_decisions


@settings(max_examples=50, deadline=None)
@given(log=event_logs())
def test_reapplying_a_log_to_its_own_state_changes_nothing(
    log: list[PreferenceEvent],
) -> None:
    """The whole log delivered twice in order: every fact, SMS consent included, is idempotent."""
    once = _apply(log, [])
    assert _apply(log + log, []) == once


@settings(max_examples=300, deadline=None)
@given(event=preference_events(0))
def test_producers_key_is_the_key_the_applier_expects(event: PreferenceEvent) -> None:
    """``kafka_key()`` (used by ``sendgate event``, the demo and the generator) is never counted as miskeyed."""
    expected = subject_key(RULES.plan(event))
    if expected is not None:  # valid events only: a rejected one has no normalised subject
        assert kafka_key(event) == expected
