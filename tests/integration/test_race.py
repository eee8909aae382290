"""SPEC §6.3 in a race: a send produced after its opt-out was acknowledged is suppressed, within milliseconds.

Short version; the chaos one (marker chaos) races ten times as many opt-outs across three gates.
"""

from __future__ import annotations

import pytest

from tests.chaos import report
from tests.chaos.race import run_race
from tests.chaos.run import chaos_run, with_services


def race_note(outcome) -> str:  # type: ignore[no-untyped-def]
    return (
        f"{outcome.after_ack} of {outcome.sends} sends produced after their opt-out's ack "
        f"({outcome.within_10ms} within 10 ms, median {outcome.median_gap_ms:.0f} ms)"
    )


def test_sends_racing_their_opt_outs_are_never_wrongly_allowed(settings, tmp_path):
    settings = with_services(settings, partitions=6)
    with report.fault("race: opt-out vs send, 2 producer threads (short)") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=800) as run:
            verdict, _measured, outcome = run_race(run, opt_outs=400)
        row.fill([verdict], pause="-", note=race_note(outcome))
        assert outcome.within_10ms > 100, f"too few sends raced their opt-out: {outcome}"
        assert verdict.counts["allowed"] > 0, "no send was allowed: the race proves nothing"
        assert verdict.clean, verdict.describe()


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_race_of_opt_outs_and_sends(settings, tmp_path):
    settings = with_services(settings, partitions=6)
    with report.fault("race: opt-out vs send, 2 producer threads, 3 gates") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=8000) as run:
            verdict, _measured, outcome = run_race(run, opt_outs=4000, gates=3, opt_out_spacing=0.005)
        row.fill([verdict], pause="-", note=race_note(outcome))
        assert outcome.within_10ms > 1000, f"too few sends raced their opt-out: {outcome}"
        assert verdict.clean, verdict.describe()
