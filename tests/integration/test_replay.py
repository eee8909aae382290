"""`sendgate replay` against real Kafka and Redis, run as a subprocess like an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import click
from click.testing import CliRunner, Result

from tests.integration.support import (
    headers_of,
    now_ms,
    preference_event,
    produce_events,
    produce_raw,
    produce_sends,
    producer,
    read_committed,
    running_applier,
    running_gate,
    send_request,
    settings_env,
    wait_for_outputs,
    wait_until,
)
from worker.assembly import Runtime
from worker.codec import AvroCodec
from worker.config import Settings
from worker.models import PreferenceEventType as T
from worker.models import SendRequest
from worker.ops.replay import replay_command
from worker.ops.replay_ledger import LedgerEntry, ReplayLedger
from worker.ops.replayer import REPLAY_OF_HEADER, REPLAY_TOKEN_HEADER, REPLAYED_AT_HEADER

HOUR_MS = 3_600_000


# -- helpers shared with test_explain / test_whatif ---------------------------------
def sendgate(settings: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess with ``settings`` in its environment; stdout and stderr apart."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**settings_env(settings), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli(command: click.Command, settings: Settings, *args: str) -> Result:
    """Run one sendgate command in this process (fast); the group's settings come in as ``obj``."""
    return CliRunner().invoke(command, list(args), obj=settings, catch_exceptions=False)


def json_out(result: subprocess.CompletedProcess[str] | Result) -> dict[str, Any]:
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert code == 0, result.stdout + result.stderr[-3000:]
    return json.loads(result.stdout)


def apply_all(settings: Settings) -> None:
    """Run the applier until the store is ready and covers every acknowledged preference event."""
    ends = Runtime.create(settings).preference_end_offsets()
    with running_applier(settings) as applier:
        wait_until(
            lambda: applier.progress.status.ready and applier.progress.status.covers(ends.read()),
            timeout=30,
            message="applier caught up",
        )


def suppressed_value(codec: AvroCodec, request: SendRequest, reasons: list[str], decided_at: int) -> bytes:
    """A SuppressedSend as the gate writes it (for tests that need chosen decision times)."""
    return codec.encode(
        "SuppressedSend",
        {
            "request": request.to_record(),
            "reasons": reasons,
            "primary_reason": reasons[0],
            "details": {"state": "gen=test"},
            "decided_at": decided_at,
            "policy_version": "test",
            "gate_instance": "test",
        },
    )


def produce_suppressed(settings: Settings, codec: AvroCodec, items: list[tuple[SendRequest, list[str], int]]) -> None:
    produce_raw(
        settings,
        settings.topics.suppressed,
        [(request.message_id.encode(), suppressed_value(codec, request, reasons, at)) for request, reasons, at in items],
    )


def ledger(settings: Settings, redis_client: Any) -> ReplayLedger:
    return ReplayLedger(client=redis_client, state=settings.state, ttl_ms=HOUR_MS)


# -- tests ---------------------------------------------------------------------------
def test_unsilenced_contact_sends_are_released_once_with_provenance_and_then_allowed(kafka_topics, redis_client):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(settings, codec, [
        preference_event(T.CONTACT_SILENCED, contact_id="c-silenced", occurred_at=now_ms() - 10_000),
        preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="out@example.com"),
    ])
    silenced = [send_request(contact_id="c-silenced", to=f"s{i}@example.com") for i in range(3)]
    opted_out = send_request(contact_id="c-other", to="out@example.com")
    originals = dict(
        zip((r.message_id for r in [*silenced, opted_out]), produce_sends(settings, codec, [*silenced, opted_out]), strict=True)
    )
    # The applier and the gate keep running: replay decides behind the same freshness barrier
    # as the gate, and the gate decides what replay releases.
    with running_applier(settings), running_gate(settings):
        outputs = wait_for_outputs(settings, 4)
        assert len(outputs.suppressed) == 4
        positions = {m.key().decode(): f"{m.topic()}/{m.partition()}/{m.offset()}" for m in outputs.suppressed}
        started = now_ms()
        produce_events(settings, codec, [preference_event(T.CONTACT_UNSILENCED, contact_id="c-silenced")])

        dry = json_out(cli(replay_command, settings, "--dry-run", "--json"))
        assert dry["dry_run"] is True
        assert dry["matched"] == 4
        assert dry["released"] == {"SILENCED": 3}
        assert dry["still_suppressed"] == {"EMAIL_OPT_OUT_ORGANIZATION": 1}
        table = cli(replay_command, settings, "--dry-run", "--reason", "silenced")
        assert table.exit_code == 0, table.output
        assert "would release" in table.stdout and "SILENCED" in table.stdout
        assert len(read_committed(settings, settings.topics.requested)) == 4, "a dry run produces nothing"
        assert list(redis_client.scan_iter(match=f"{settings.state.key_prefix}-replay:*")) == [], "nor records anything"

        first = json_out(sendgate(settings, "replay", "--reason", "SILENCED", "--json"))
        assert first["released"] == {"SILENCED": 3} and first["matched"] == 3
        assert first["in_doubt"] == 0 and first["unconfirmed_this_run"] == 0
        requested = read_committed(settings, settings.topics.requested)
        replayed = [m for m in requested if REPLAY_OF_HEADER in headers_of(m)]
        assert len(replayed) == 3
        for message in replayed:
            message_id = message.key().decode()
            headers = headers_of(message)
            assert message.value() == originals[message_id], "the original SendRequest, same key"
            assert headers[REPLAY_OF_HEADER] == positions[message_id]
            assert int(headers[REPLAYED_AT_HEADER]) >= started
            assert headers[REPLAY_TOKEN_HEADER]

        outputs = wait_for_outputs(settings, 7)
        assert sorted(m.key().decode() for m in outputs.allowed) == sorted(r.message_id for r in silenced)
        assert len(outputs.suppressed) == 4

        again = json_out(cli(replay_command, settings, "--reason", "SILENCED", "--json"))
        assert again["released_total"] == 0 and again["already_replayed"] == 3
        assert len(read_committed(settings, settings.topics.requested)) == 7

    # The ledger holds keyed digests: no organization, message id or address in keys or values.
    entries = {
        k.decode(): v.decode() for k in redis_client.scan_iter(match=f"{settings.state.key_prefix}-replay:*") for v in [redis_client.get(k)]
    }
    assert len(entries) == 3
    for key, value in entries.items():
        assert LedgerEntry.decode(value).done
        assert not any(secret in key + value for secret in ("org-a", "c-silenced", "example.com", *originals))


def test_filters_select_by_organization_campaign_time_and_reason(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    base = now_ms() - 5 * HOUR_MS
    items = []
    for org in ("org-a", "org-b"):
        for campaign in ("camp-1", "camp-2"):
            for hour in (0, 2):
                request = send_request(org_id=org, campaign_id=campaign, contact_id=f"{org}-{campaign}-{hour}")
                items.append((request, ["SILENCED"], base + hour * HOUR_MS))
    items.append((send_request(org_id="org-a", campaign_id="camp-1"), ["DO_NOT_CONTACT", "SILENCED"], base))
    items.append((send_request(org_id="org-a", campaign_id="camp-1"), ["OK_TO_EMAIL_FALSE"], base))
    produce_suppressed(settings, codec, items)
    apply_all(settings)  # an empty store, ready: everything is allowed now

    def released(*args: str) -> int:
        return json_out(cli(replay_command, settings, "--dry-run", "--json", *args))["released_total"]

    assert released() == 10
    assert released("--org", "org-b") == 4
    assert released("--org", "org-a", "--campaign", "camp-1") == 4
    assert released("--campaign", "camp-2", "--org", "org-a", "--org", "org-b") == 4
    assert released("--reason", "SILENCED") == 9, "any reason of the record matches, not only the primary"
    assert released("--reason", "DO_NOT_CONTACT", "--reason", "OK_TO_EMAIL_FALSE") == 2
    assert released("--until", str(base + HOUR_MS)) == 6
    assert released("--since", str(base + HOUR_MS)) == 4
    iso_since = datetime.fromtimestamp((base + 2 * HOUR_MS) // 1000, tz=UTC).isoformat()  # 2026-...T..+00:00
    assert released("--since", iso_since, "--org", "org-a") == 2
    assert released("--dedupe-window", "1h") == 0, "records older than the window are never replayed"
    assert len(read_committed(settings, settings.topics.requested)) == 0


def test_a_message_is_released_once_and_in_doubt_claims_are_resolved(kafka_topics, redis_client):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    at = now_ms() - HOUR_MS
    twice = send_request(message_id="twice")
    sent_before_crash = send_request(message_id="crashed-after-produce")
    lost_in_crash = send_request(message_id="crashed-before-produce")
    being_replayed = send_request(message_id="claimed-just-now")
    produce_suppressed(
        settings,
        codec,
        [
            (twice, ["SILENCED"], at),
            (twice, ["SILENCED"], at + 1),
            (sent_before_crash, ["SILENCED"], at),
            (lost_in_crash, ["SILENCED"], at),
            (being_replayed, ["SILENCED"], at),
        ],
    )
    # Claims an earlier run left: two old ones (one of which it did produce), one fresh.
    book = ledger(settings, redis_client)
    old = now_ms() - 10 * 60_000
    for request, entry in (
        (sent_before_crash, LedgerEntry(False, "old-run.1", old)),
        (lost_in_crash, LedgerEntry(False, "old-run.2", old)),
        (being_replayed, LedgerEntry(False, "other-run.1", now_ms())),
    ):
        assert book.claim([(book.key(request.org_id, request.message_id), entry)]) == [True]
    produce_raw_with_headers(settings, sent_before_crash, codec, [(REPLAY_TOKEN_HEADER, b"old-run.1")])
    apply_all(settings)

    summary = json_out(cli(replay_command, settings, "--json"))
    assert summary["released"] == {"SILENCED": 2}  # "twice" once, and the claim lost in the crash
    assert summary["already_replayed"] == 2  # the second "twice", and the one found sent
    assert summary["in_doubt_found_sent"] == 1 and summary["in_doubt_released_again"] == 1
    assert summary["in_doubt"] == 1  # claimed moments ago by another run: left alone
    released = [m.key().decode() for m in read_committed(settings, settings.topics.requested) if REPLAY_OF_HEADER in headers_of(m)]
    assert sorted(released) == ["crashed-before-produce", "twice"]
    entries = book.get([book.key("org-a", i) for i in ("twice", "crashed-after-produce", "crashed-before-produce", "claimed-just-now")])
    assert [e.done for e in entries if e] == [True, True, True, False]


def produce_raw_with_headers(settings: Settings, request: SendRequest, codec: AvroCodec, headers: list[tuple[str, bytes]]) -> None:
    p = producer(settings)
    p.produce(
        settings.topics.requested, key=request.message_id.encode(), value=codec.encode("SendRequest", request.to_record()), headers=headers
    )
    assert p.flush(30) == 0


def test_replay_fails_closed_on_a_store_that_is_not_ready(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_suppressed(settings, codec, [(send_request(), ["SILENCED"], now_ms())])
    result = cli(replay_command, settings)  # no applier ever ran: the store has no generation
    assert result.exit_code == 13, result.output  # ExitCode.STATE_FATAL
    assert "state store" in result.stderr and "Traceback" not in result.stderr
    assert read_committed(settings, settings.topics.requested) == []


def test_bad_arguments_exit_2_with_a_clear_message(settings):
    for args, words in (
        (("--since", "not-a-date"), "neither epoch milliseconds nor an ISO-8601"),
        (("--since", "1700000000"), "epoch seconds"),
        (("--since", "2026-01-02", "--until", "2026-01-01"), "--since must be before --until"),
        (("--reason", "NOT_A_REASON"), "NOT_A_REASON"),
        (("--dedupe-window", "forever"), "not a duration"),
    ):
        result = cli(replay_command, settings, *args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr, result.stderr
    real = sendgate(settings, "replay", "--since", "yesterday-ish")
    assert real.returncode == 2 and "Invalid value for '--since'" in real.stderr


def test_unreachable_kafka_or_redis_fails_clearly_and_writes_nothing(kafka_topics, redis_client):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_suppressed(settings, codec, [(send_request(), ["SILENCED"], now_ms())])
    apply_all(settings)
    before = set(redis_client.scan_iter(match=f"{settings.state.key_prefix}*"))
    for env, words in (
        ({"SENDGATE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "Kafka unreachable"),
        ({"SENDGATE_REDIS__URL": "redis://127.0.0.1:1/0"}, "Redis unreachable"),
    ):
        result = sendgate(settings, "replay", env=env)
        assert result.returncode == 15, result.stderr  # ExitCode.UNREACHABLE
        assert words in result.stderr and "Traceback" not in result.stderr
    for topic in settings.topics.all_names():
        if topic != settings.topics.suppressed:
            assert read_committed(settings, topic, timeout=5) == [], topic
    assert set(redis_client.scan_iter(match=f"{settings.state.key_prefix}*")) == before
