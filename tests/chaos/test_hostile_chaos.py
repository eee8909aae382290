"""SPEC §6.5 at scale: thousands of fuzzed values in valid traffic, then a dead-letter burst (exit 12)."""

from __future__ import annotations

import pytest

from tests.chaos import report
from tests.chaos.hostile import assert_hostile_outcome, run_hostile
from tests.chaos.run import chaos_run, with_services
from worker.errors import ExitCode


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_fuzzed_input_and_a_dead_letter_burst(settings, tmp_path):
    settings = with_services(settings, partitions=6)
    with report.fault("hostile input + dead-letter burst") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=3000) as run:
            verdict, _measured, outcome = run_hostile(run, valid_sends=30_000, fuzz=3000, records_per_second=800, burst=3000)
            row.fill(
                [verdict], pause="-",
                note=f"{len(outcome.hostile.poison)} bad values in traffic, then 3000 at once: gate exits "
                f"{outcome.burst_exit_codes} (want 12)",
            )
            assert_hostile_outcome(verdict, outcome, run.ledger)
        assert outcome.burst_exit_codes == [ExitCode.DEAD_LETTER_BURST] * 2
        assert verdict.clean, verdict.describe()
