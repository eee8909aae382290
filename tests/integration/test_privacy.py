"""SPEC §6.6: no personal data in logs, metric labels or Redis keys, after a full run.

The run is the short version of the crash test (tests/chaos/test_crash.py): an
applier and two gates at DEBUG log level, one gate SIGKILLed and restarted
four times, opt-outs flowing in, and bait (invalid events and sends whose
addresses cannot be parsed) that tempts the code into quoting an address. Then
every log line, the /metrics pages and every Redis key, field and value of the
store are scanned for the addresses and numbers the run produced.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import replace

import redis

from tests.chaos import report
from tests.chaos.faults import run_crash
from tests.chaos.instances import free_ports
from tests.chaos.run import ChaosRun, chaos_run, with_services
from tests.chaos.workload import T
from worker.models import Category, Channel

# Shaped like a real address (two characters each side of the @, a top-level domain of letters):
# the store's binary digest fields, read as latin-1, spell short things like "%@Y.s" by chance.
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]{2,}@[A-Za-z0-9\-]{2,}(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")


def personal_data(run: ChaosRun, bait: list[str]) -> list[str]:
    """Every string that must not appear: addresses, their local parts, numbers in E.164 and national form."""
    needles: list[str] = list(bait)
    for email in run.audience.emails:
        needles += [email, email.split("@")[0]]
    for phone in run.audience.phones:
        needles += [phone, phone[2:]]  # +14155550123 and 4155550123
    needles.append(run.audience.sender)
    return needles


def leaks(text: str, needles: list[str]) -> list[str]:
    lowered = text.lower()
    found = [n for n in needles if n.lower() in lowered]
    found += [m.group(0) for m in EMAIL.finditer(text)]
    return sorted(set(found))


def produce_bait(run: ChaosRun) -> list[str]:
    """Invalid preference events and unusable send addresses that carry personal data."""
    audience, events, sends = run.audience, run.events(), run.sends()
    bait = ["Jane Bait <jane.bait@example.com>", "jane.bait@example.com", "+1 (415) 555-0199", "4155550199"]
    events.emit(
        [
            audience.event(T.EMAIL_OPT_OUT_ORGANIZATION, 0, email=bait[0]),  # INVALID_ADDRESS (display name)
            audience.event(T.SMS_OPT_OUT, 0, phone="+1 (415) 555-0199"),  # SMS_NOT_OPTED_IN
            audience.event(T.EMAIL_OPT_OUT_USER, 1),  # MISSING_FIELD, quoting nothing but the address exists
        ]
    )
    base = audience.request("", 2, channel=Channel.EMAIL, category=Category.MARKETING, user="user-1")
    sends.send(replace(base, message_id=run.ledger.next_id(), to=bait[0]))
    sends.send(replace(base, message_id=run.ledger.next_id(), channel=Channel.SMS, to="+1 (415) 555-0199 ext. jane.bait@example.com"))
    sends.flush()
    return bait


def redis_contents(client: redis.Redis, prefix: str) -> tuple[list[str], int]:
    """Keys, hash fields and values of the store as text (latin-1, so no byte is lost), and the key count."""
    parts: list[str] = []
    count = 0
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        count += 1
        parts.append(key.decode("latin-1"))
        if client.type(key) == b"hash":
            for field, value in client.hgetall(key).items():
                parts += [field.decode("latin-1"), value.decode("latin-1")]
        else:
            parts.append(repr(client.dump(key)))
    return parts, count


def test_a_full_run_with_gate_restarts_leaves_no_personal_data_in_logs_metrics_or_redis(settings, redis_client, tmp_path):
    settings = with_services(settings, partitions=6)
    ports = free_ports(2)
    metrics_pages: list[str] = []

    def scrape(fleet) -> None:  # type: ignore[no-untyped-def]
        for port in ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                metrics_pages.append(response.read().decode())

    with report.fault("crash: SIGKILL 1 of 2 gates x4 (short; the privacy run)") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=1000) as run:
            bait = produce_bait(run)
            verdict, measured = run_crash(
                run, gates=2, records=20_000, kills=4, sends_per_second=1000,
                extra_env={"SENDGATE_LOG__LEVEL": "DEBUG"},
                gate_env=lambda i: {"SENDGATE_HTTP__ENABLED": "true", "SENDGATE_HTTP__PORT": str(ports[i])},
                before_finish=scrape,
            )
            needles = personal_data(run, bait)
            logs = run.workers.logs()
            last_logs = [worker.log_paths[-1] for worker in run.workers.all]  # earlier ones may have died young
            stored, keys = redis_contents(redis_client, settings.state.key_prefix)
            org = run.audience.org_id
        row.fill(
            [verdict],
            pause=f"longest partition stall {measured.longest_stall:.1f} s",
            note=f"{measured.effective_faults}/4 kills with records in flight",
        )
        assert measured.effective_faults == 4
        assert verdict.clean, verdict.describe()

    with report.fault("privacy: logs, /metrics, Redis keys of that run") as row:
        row.note = f"{len(logs)} log bytes, {len(metrics_pages)} metrics pages, {keys} Redis keys scanned"
        assert all('{"event": ' in path.read_text() for path in last_logs), "a worker wrote no JSON log"
        assert '"level": "debug"' in logs, "the run did not log at DEBUG level"
        assert leaks(logs, needles) == [], "personal data in the workers' logs"
        assert len(metrics_pages) == 2 and all("sendgate_decisions_total" in page for page in metrics_pages)
        assert leaks("\n".join(metrics_pages), [*needles, org]) == [], "personal data or organization ids in metric labels"
        assert keys > 10, f"only {keys} keys in the store: the scan would prove nothing"
        assert leaks("\n".join(stored), [*needles, org]) == [], "personal data or organization ids in Redis keys, fields or values"
