"""The traffic generator: reproducible, the promised mix, duplicates, SPEC §4 keys, the bench plan."""

from __future__ import annotations

import collections

import pytest

from worker.bench.plan import BenchPlan
from worker.codec import AvroCodec
from worker.loadgen.producing import encoded_events, encoded_sends
from worker.loadgen.records import INVALID_KINDS, INVALID_SUFFIX
from worker.loadgen.streams import EVENT_MIX, generate_events, generate_sends
from worker.loadgen.world import World
from worker.models import Category, Channel, PreferenceEvent, RejectionReason
from worker.models import PreferenceEventType as T
from worker.policy.addresses import normalize_email, normalize_phone
from worker.policy.decision import DecisionPolicy
from worker.policy.event_keys import kafka_key
from worker.policy.events import PreferenceRules, apply_events

BASE_MS = 1_790_000_000_000


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=7, orgs=8, contacts=3_000)


@pytest.fixture(scope="module")
def events(world: World) -> list[PreferenceEvent]:
    return list(generate_events(world, 6_000, seed=7, base_time_ms=BASE_MS))


@pytest.fixture(scope="module")
def rejected(events: list[PreferenceEvent]) -> list[tuple[PreferenceEvent, RejectionReason, str]]:
    return apply_events(PreferenceRules(), events, {})[1]


def test_the_same_seed_gives_the_same_world_and_traffic(world):
    again = World(seed=7, orgs=8, contacts=3_000)
    assert [again.contact(i) for i in range(0, 3_000, 37)] == [world.contact(i) for i in range(0, 3_000, 37)]
    assert list(generate_events(again, 500, seed=7, base_time_ms=BASE_MS)) == list(
        generate_events(world, 500, seed=7, base_time_ms=BASE_MS)
    )
    assert list(generate_sends(again, 500, seed=7, base_time_ms=BASE_MS)) == list(
        generate_sends(world, 500, seed=7, base_time_ms=BASE_MS)
    )


def test_another_seed_gives_other_traffic(world):
    other = World(seed=8, orgs=8, contacts=3_000)
    assert [other.contact(i).email for i in range(50)] != [world.contact(i).email for i in range(50)]
    assert list(generate_sends(world, 50, seed=8, base_time_ms=BASE_MS)) != list(
        generate_sends(world, 50, seed=7, base_time_ms=BASE_MS)
    )


def test_organizations_are_skewed_and_cover_every_contact(world):
    sizes = [org.contact_count for org in world.organizations]
    assert sum(sizes) == world.contact_count
    assert sizes[0] > 3 * sizes[-1] >= 3
    assert all(org.users and org.sender_domains for org in world.organizations)
    assert len({org.org_id for org in world.organizations}) == 8


def test_duplicate_contacts_share_email_and_phone_with_their_original(world):
    duplicates = [c for c in map(world.contact, range(world.contact_count)) if c.duplicate_of is not None]
    assert 0.04 < len(duplicates) / world.contact_count < 0.12
    for contact in duplicates[:50]:
        original = world.contact(contact.duplicate_of)
        assert original.org == contact.org and original.contact_id != contact.contact_id
        assert (original.email, original.phone) == (contact.email, contact.phone)


def test_sends_reach_duplicates_under_different_contact_ids(world):
    contacts_by_address: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for send in generate_sends(world, 3_000, seed=7, base_time_ms=BASE_MS):
        contacts_by_address[(send.org_id, send.to.strip().lower())].add(send.contact_id)
    assert any(len(ids) > 1 for ids in contacts_by_address.values())


def test_every_event_type_appears_in_about_its_share(events):
    counts = collections.Counter(event.type for event in events)
    assert set(counts) == set(T)
    total = sum(EVENT_MIX.values())
    for kind, share in EVENT_MIX.items():
        expected = share / total * len(events)
        # SMS opt-outs need an earlier opt-in, so a few turn into opt-ins at the start.
        assert 0.6 * expected < counts[kind] < 1.6 * expected, kind


def test_a_few_events_are_rejected_for_every_reason_the_generator_aims_at(events, rejected):
    reasons = collections.Counter(reason for _, reason, _ in rejected)
    assert set(INVALID_KINDS) <= set(reasons)
    assert RejectionReason.UNDECODABLE not in reasons
    # About 2 % built invalid, plus opt-ins refused after a do-not-contact.
    assert 0.01 < len(rejected) / len(events) < 0.06


def test_sms_opt_outs_follow_an_opt_in_of_the_same_number_and_key(events):
    opted_in: set[bytes] = set()
    valid_opt_outs = 0
    for event in events:
        if event.event_id.endswith(INVALID_SUFFIX):
            continue
        if event.type is T.SMS_OPT_IN:
            opted_in.add(kafka_key(event).encode())
        elif event.type is T.SMS_OPT_OUT:
            # The same key: the same partition, so the opt-in is applied first.
            assert kafka_key(event).encode() in opted_in
            valid_opt_outs += 1
    assert valid_opt_outs > 100


def test_every_event_built_to_be_rejected_is_rejected(events, rejected):
    marked = {event.event_id for event in events if event.event_id.endswith(INVALID_SUFFIX)}
    assert len(marked) > 50
    assert marked <= {event.event_id for event, _, _ in rejected}


def test_send_mix_channels_categories_and_invalid_addresses(world):
    sends = list(generate_sends(world, 4_000, seed=7, base_time_ms=BASE_MS))
    email = sum(s.channel is Channel.EMAIL for s in sends) / len(sends)
    marketing = sum(s.category is Category.MARKETING for s in sends) / len(sends)
    assert 0.6 < email < 0.8 and 0.7 < marketing < 0.8
    policy = DecisionPolicy()
    invalid = sum(policy.prepare(s).invalid for s in sends) / len(sends)
    assert 0.003 < invalid < 0.03
    assert len({s.message_id for s in sends}) == len(sends)
    assert [s.requested_at for s in sends[:3]] == [BASE_MS, BASE_MS + 1, BASE_MS + 2]


def test_keys_follow_spec_section_4_and_values_decode(events):
    codec = AvroCodec()
    kinds: collections.Counter[str] = collections.Counter()
    for event, (key, value) in zip(events[:2_000], encoded_events(events[:2_000], codec, kinds), strict=True):
        assert PreferenceEvent.from_record(codec.decode("PreferenceEvent", value)) == event
        if event.type is T.ORG_SETTINGS_CHANGED:
            expected = event.org_id
        elif event.type.name.startswith("CONTACT_"):
            expected = f"{event.org_id}:{event.contact_id or ''}"
        elif event.type.name.startswith("SMS_"):
            expected = f"{event.org_id}:{normalize_phone(event.phone or '') or event.phone or ''}"
        else:  # the subject key of an address is its normalised form (one partition per subject)
            expected = f"{event.org_id}:{normalize_email(event.email or '') or event.email or ''}"
        assert key == expected.encode()
    assert sum(kinds.values()) == 2_000


def test_send_keys_are_message_ids_and_stamping_sets_requested_at(world):
    codec = AvroCodec()
    sends = list(generate_sends(world, 20, seed=7, base_time_ms=0))
    for send, (key, value) in zip(sends, encoded_sends(sends, codec, collections.Counter(), stamp_now=True), strict=True):
        assert key == send.message_id.encode()
        assert codec.decode("SendRequest", value)["requested_at"] > BASE_MS


def test_a_world_needs_a_contact_per_organization():
    with pytest.raises(ValueError):
        World(seed=1, orgs=10, contacts=9)


def test_bench_plan_holds_the_asked_facts_and_suppresses_about_a_fifth():
    plan = BenchPlan(seed=3, orgs=4, opt_outs=2_000, contact_facts=200, sms_opt_ins=300, clean_contacts=1_000)
    events = list(plan.events(base_time_ms=BASE_MS))
    valid = [event for event in events if not event.event_id.endswith(INVALID_SUFFIX)]
    kinds = collections.Counter(event.type for event in valid)
    opt_out_types = (T.EMAIL_OPT_OUT_ORGANIZATION, T.EMAIL_OPT_OUT_DOMAIN, T.EMAIL_OPT_OUT_USER, T.EMAIL_UNSUBSCRIBE, T.SMS_OPT_OUT)
    assert sum(kinds[t] for t in opt_out_types) == 2_000
    assert kinds[T.SMS_OPT_IN] == kinds[T.SMS_OPT_OUT] + 300  # each SMS opt-out after its opt-in, plus the opted-in
    assert kinds[T.ORG_SETTINGS_CHANGED] == 4
    assert sum(kinds[t] for t in T if t.name.startswith("CONTACT_")) == 200
    assert len(events) - len(valid) == 2  # one in a thousand opt-outs

    facts, rejected = apply_events(PreferenceRules(), events, {})
    rejected_ids = {event.event_id for event, _, _ in rejected}
    assert {e.event_id for e in events if e not in valid} <= rejected_ids
    # Besides: opt-ins of a number a duplicate contact's do-not-contact opted out.
    assert len(rejected_ids) < 0.01 * len(events)
    policy = DecisionPolicy()
    sends = list(plan.sends(2_000, base_time_ms=BASE_MS + len(events)))
    suppressed = 0
    for send in sends:
        prepared = policy.prepare(send)
        if not policy.decide(prepared, facts).allowed:
            suppressed += 1
    assert 0.17 < suppressed / len(sends) < 0.30
    assert {s.channel for s in sends} == {Channel.EMAIL, Channel.SMS}
