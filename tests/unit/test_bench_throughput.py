"""The throughput comparison's arithmetic: medians, spread, each gate run against the baselines either side."""

from __future__ import annotations

from worker.bench.baseline import BaselineResult
from worker.bench.config import BenchConfig
from worker.bench.gate_timing import GatePass
from worker.bench.throughput import ThroughputComparison, TimedRun, spread


def _baseline(rate: float) -> TimedRun:
    run = TimedRun("baseline", measured_records=int(rate), seconds=1.0)
    run.passes.append(BaselineResult(records=int(rate), measured_records=int(rate), seconds=1.0, batches=2, transactions=1))
    return run


def _gate(rate: float) -> TimedRun:
    run = TimedRun("gate", measured_records=int(rate), seconds=1.0)
    progress = {"allowed": 8, "suppressed": 2, "dead_lettered": 0, "transactions": 1, "fail_closed_pauses": 0, "state_round_trips": 2}
    run.passes.append(GatePass(records=10, measured_records=int(rate), seconds=1.0, batches=2, measured_batches=1,
                               progress=progress, evalsha_calls=2, phases={"consume": 0.1}))
    return run


def test_spread_is_range_over_median():
    assert spread([90.0, 100.0, 110.0]) == 0.2
    assert spread([]) is None


def test_each_gate_run_is_held_against_its_neighbours():
    comparison = ThroughputComparison(None, BenchConfig(sends=10), None, console=None)  # type: ignore[arg-type]
    sections = comparison._sections([_baseline(100), _baseline(200), _baseline(100)], [_gate(75), _gate(30)])
    assert sections["ratio_runs"] == [0.5, 0.2]
    assert sections["ratio"] == 0.35
    assert sections["baseline"]["records_per_second"] == 100
    assert sections["gate"]["records_per_second"] == 52  # median of 75 and 30, rounded
    assert sections["gate"]["round_trips_per_batch"] == 1.0
    assert sections["throughput_order"] == "B G B G B"
