"""SPEC §6.1 through SIGKILL: gates of one consumer group killed at random moments and restarted.

The short version (two gates, 20 000 records, four kills) is the privacy run
of tests/integration/test_privacy.py.
"""

from __future__ import annotations

import pytest

from tests.chaos import report
from tests.chaos.faults import run_crash
from tests.chaos.run import chaos_run, with_services

KILLS = 20


@pytest.mark.chaos
@pytest.mark.timeout(2400)
def test_sigkill_of_three_gates_twenty_times_loses_and_doubles_nothing(settings, tmp_path):
    settings = with_services(settings, partitions=6)
    with report.fault(f"crash: SIGKILL 1 of 3 gates x{KILLS} (6 partitions)") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=5000) as run:
            verdict, measured = run_crash(
                run, gates=3, records=200_000, kills=KILLS, sends_per_second=1500, events_per_second=20,
                catch_up_timeout=900,
            )
        row.fill(
            [verdict],
            pause=f"longest partition stall {measured.longest_stall:.1f} s",
            note=f"{measured.effective_faults}/{KILLS} kills landed with records in flight; run {measured.duration:.0f} s",
        )
        assert measured.effective_faults == KILLS
        assert verdict.clean, verdict.describe()
