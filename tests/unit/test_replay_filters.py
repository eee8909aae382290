"""Replay and what-if selection: time parsing, filters, ledger values and keys (no services)."""

from __future__ import annotations

import click
import pytest
import redis
from pydantic import SecretStr

from worker.config import StateSettings
from worker.ops.replay_ledger import LedgerEntry, ReplayLedger
from worker.ops.topic_reader import DurationParam, RecordFilter, TimeParam, parse_duration, parse_time

JAN_1_2026_MS = 1_767_225_600_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1767225600000", JAN_1_2026_MS),
        ("2026-01-01T00:00:00Z", JAN_1_2026_MS),
        ("2026-01-01T00:00:00+00:00", JAN_1_2026_MS),
        ("2026-01-01T01:00:00+01:00", JAN_1_2026_MS),
        ("2026-01-01T00:00:00", JAN_1_2026_MS),  # naive: UTC
        ("2026-01-01", JAN_1_2026_MS),
        ("2026-01-01T00:00:00.250Z", JAN_1_2026_MS + 250),
        ("  2026-01-01T00:00:00Z ", JAN_1_2026_MS),
    ],
)
def test_times_are_epoch_ms_or_iso_8601(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not-a-date", "neither epoch milliseconds nor an ISO-8601"),
        ("1767225600", "looks like epoch seconds"),
        ("", "empty"),
        ("2026-13-01", "neither"),
        ("-5", "neither"),
    ],
)
def test_bad_times_are_refused_with_the_reason(text, words):
    with pytest.raises(ValueError, match=words):
        parse_time(text)


def test_the_click_parameter_turns_a_bad_time_into_a_usage_error():
    with pytest.raises(click.BadParameter, match="neither epoch"):
        TimeParam().convert("yesterday", None, None)
    assert TimeParam().convert("2026-01-01", None, None) == JAN_1_2026_MS


@pytest.mark.parametrize(
    ("text", "millis"), [("30d", 30 * 86_400_000), ("12h", 43_200_000), ("90m", 5_400_000), ("600s", 600_000), (" 1 d", 86_400_000)]
)
def test_durations(text, millis):
    assert parse_duration(text) == millis
    assert DurationParam().convert(text, None, None) == millis


@pytest.mark.parametrize("text", ["0d", "forever", "30", "-1d", "1w"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def suppressed(*, org="org-a", campaign="camp-1", decided_at=JAN_1_2026_MS, reasons=("SILENCED",)):
    request = {"org_id": org, "campaign_id": campaign, "requested_at": decided_at - 10}
    return {"request": request, "decided_at": decided_at, "reasons": list(reasons), "primary_reason": reasons[0]}


def test_an_empty_filter_matches_everything():
    assert RecordFilter().matches_suppressed(suppressed())
    assert RecordFilter().matches_suppressed(suppressed(campaign=None))


def test_since_is_inclusive_and_until_exclusive_on_decided_at():
    window = RecordFilter(since_ms=JAN_1_2026_MS, until_ms=JAN_1_2026_MS + 1000)
    assert window.matches_suppressed(suppressed(decided_at=JAN_1_2026_MS))
    assert window.matches_suppressed(suppressed(decided_at=JAN_1_2026_MS + 999))
    assert not window.matches_suppressed(suppressed(decided_at=JAN_1_2026_MS + 1000))
    assert not window.matches_suppressed(suppressed(decided_at=JAN_1_2026_MS - 1))


def test_requested_records_are_filtered_on_requested_at():
    record = suppressed(decided_at=JAN_1_2026_MS)["request"]  # requested 10 ms before the decision
    assert RecordFilter(until_ms=JAN_1_2026_MS).matches_requested(record)
    assert not RecordFilter(since_ms=JAN_1_2026_MS).matches_requested(record)


def test_reasons_match_any_recorded_reason_not_only_the_primary():
    record = suppressed(reasons=("DO_NOT_CONTACT", "SILENCED"))
    assert RecordFilter(reasons=frozenset({"SILENCED"})).matches_suppressed(record)
    assert RecordFilter(reasons=frozenset({"SMS_OPT_OUT", "DO_NOT_CONTACT"})).matches_suppressed(record)
    assert not RecordFilter(reasons=frozenset({"SMS_OPT_OUT"})).matches_suppressed(record)


def test_organizations_and_campaigns_are_sets_combined_with_and():
    chosen = RecordFilter(orgs=frozenset({"org-a", "org-b"}), campaigns=frozenset({"camp-1"}))
    assert chosen.matches_suppressed(suppressed(org="org-b"))
    assert not chosen.matches_suppressed(suppressed(org="org-c"))
    assert not chosen.matches_suppressed(suppressed(campaign="camp-2"))
    assert not chosen.matches_suppressed(suppressed(campaign=None))


def test_since_must_come_before_until():
    with pytest.raises(ValueError, match="--since must be before --until"):
        RecordFilter(since_ms=2, until_ms=2)


@pytest.mark.parametrize(
    "entry",
    [LedgerEntry(False, "run.1", JAN_1_2026_MS), LedgerEntry(True, "run.2", JAN_1_2026_MS, "3:17")],
)
def test_ledger_values_round_trip(entry):
    assert LedgerEntry.decode(entry.encode()) == entry


def test_a_foreign_ledger_value_is_refused():
    with pytest.raises(ValueError):
        LedgerEntry.decode("hello")


def ledger(secret: str = "s3cret", prefix: str = "sg") -> ReplayLedger:
    # redis-py connects lazily: building the ledger does no I/O.
    return ReplayLedger(client=redis.Redis(), state=StateSettings(hash_secret=SecretStr(secret), key_prefix=prefix), ttl_ms=1000)


def test_ledger_keys_are_keyed_digests_of_org_and_message_id():
    book = ledger()
    key = book.key("org-a", "msg-1")
    assert key.startswith("sg-replay:") and "org-a" not in key and "msg-1" not in key
    assert key == ledger().key("org-a", "msg-1")
    assert key != book.key("org-b", "msg-1") != book.key("org-a", "msg-2")
    assert key != ledger(secret="other").key("org-a", "msg-1")
    # The separator keeps ("a", "b:c") and ("a:b", "c") apart.
    assert book.key("a", "b:c") != book.key("a:b", "c")


def test_ledger_keys_survive_a_state_rebuild():
    # rebuild-state deletes "<prefix>:*"; the ledger must not be matched by that pattern.
    assert not ledger(prefix="sg").key("org-a", "msg-1").startswith("sg:")
