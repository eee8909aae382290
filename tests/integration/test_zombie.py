"""A zombie gate: paused mid-transaction past its session and transaction timeouts, then resumed.

Another gate must take its partitions over; the resumed zombie must either
find itself fenced and exit (ExitCode.FENCED, or KAFKA_FATAL), or recover
in-process and rejoin the group (see ZombieOutcome.fenced_or_rejoined), and
nothing it did may be visible twice. The session timeout is the consumer's fixed 10 s
(worker/kafka/clients.py sets session.timeout.ms after SENDGATE_KAFKA__EXTRA,
so it cannot be shortened from the environment); the transaction timeout is
shortened with SENDGATE_GATE__TRANSACTION_TIMEOUT_MS.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests import harness
from tests.chaos import report
from tests.chaos.faults import ZombieOutcome, assigned_partitions, run_zombie
from tests.chaos.run import chaos_run, with_services
from worker.errors import ExitCode

SESSION_TIMEOUT_SECONDS = 10.0


def fill_zombie_row(row: report.Row, verdicts, outcomes: list[ZombieOutcome]) -> None:  # type: ignore[no-untyped-def]
    takeovers = [o.took_over_seconds for o in outcomes if o.took_over_seconds is not None]
    row.fill(
        verdicts,
        pause=f"taken over after {max(takeovers):.1f} s" if takeovers else "never taken over",
        note=f"zombie exit codes {[o.zombie_exit for o in outcomes]} (want 10 FENCED or 11, or None having rejoined: "
        f"{[o.rejoined for o in outcomes]}); "
        f"paused mid-transaction: {[o.mid_transaction for o in outcomes]}",
    )


def assert_zombie(verdict, outcome: ZombieOutcome) -> None:  # type: ignore[no-untyped-def]
    assert outcome.mid_transaction, "the gate was never caught inside a transaction: the run proves nothing"
    assert verdict.clean, verdict.describe()
    assert outcome.took_over_seconds is not None, "the paused gate's partitions were never taken over"
    assert outcome.took_over_seconds < SESSION_TIMEOUT_SECONDS + 15
    assert outcome.fenced_or_rejoined, (
        f"the resumed zombie {'neither exited nor rejoined' if outcome.zombie_exit is None else f'exited {outcome.zombie_exit}'}"
        f", want FENCED (10), KAFKA_FATAL (11) or an in-process rejoin:\n{outcome.zombie_log_tail}"
    )


def test_a_paused_gate_is_taken_over_and_fenced_when_it_resumes(settings, tmp_path):
    settings = with_services(settings, partitions=6)
    with report.fault("zombie: SIGSTOP 1 of 2 gates 15 s (short)") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=1000) as run:
            verdict, _measured, outcome = run_zombie(
                run, records=12_000, sends_per_second=400, pause_seconds=15, transaction_timeout_ms=2000
            )
        fill_zombie_row(row, [verdict], [outcome])
        assert_zombie(verdict, outcome)


def test_a_gate_whose_static_membership_is_taken_by_another_live_gate_exits_fenced(settings, tmp_path):
    """A static member fenced by a genuinely different live process with its instance id must exit (10).

    librdkafka reports FENCED_INSTANCE_ID as a fatal *consumer* error: consume()
    returns an error whose code is ``_FATAL`` (``KafkaError.fatal()`` is False
    on it). The same error hits a static member after a broker restart, fenced
    by its own earlier join; there the gate re-creates its consumer
    (test_broker_restart). Here a second process with the same instance id
    takes the membership over, with no traffic, so nothing but the consumer
    and the fence probe of the producer can notice.
    """
    settings = with_services(settings, partitions=2)
    with chaos_run(settings, tmp_path / "logs", audience_size=10) as run:
        run.workers.applier()
        first = run.workers.gate("same-instance")
        deadline = time.monotonic() + 60
        while not assigned_partitions(first):
            assert first.poll() is None and time.monotonic() < deadline, first.tail()
            time.sleep(0.2)
        second = run.workers.gate("same-instance")
        try:
            code: int | None = first.wait(25)
        except subprocess.TimeoutExpired:
            code = None
        # Its consumer is dead, but the process may not re-create it: the probe of
        # its producer finds the transactional id taken (the second gate's
        # init_transactions), so it exits FENCED instead of stealing the membership back.
        assert code == ExitCode.FENCED, (
            f"the fenced gate {'is still running' if code is None else f'exited {code}'}:\n{first.tail()}"
        )
        assert "fence probe" in first.logs() or "fenced" in first.logs(), first.tail()
        assert second.poll() is None, second.tail()


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_zombies_of_three_gates(services, tmp_path):
    verdicts, outcomes = [], []
    with report.fault("zombie: SIGSTOP 1 of 3 gates 25 s") as row:
        for attempt in range(3):
            settings = with_services(harness.settings_for(services, harness.unique_prefix()), partitions=6)
            with chaos_run(settings, tmp_path / f"logs-{attempt}", audience_size=3000, seed=attempt) as run:
                verdict, _measured, outcome = run_zombie(
                    run, records=40_000, sends_per_second=800, pause_seconds=25, transaction_timeout_ms=10_000, gates=3
                )
            verdicts.append(verdict)
            outcomes.append(outcome)
        fill_zombie_row(row, verdicts, outcomes)
        for verdict, outcome in zip(verdicts, outcomes, strict=True):
            assert_zombie(verdict, outcome)
