"""The throughput comparison's arithmetic: medians, spread, each gate run against the baselines either side."""

from __future__ import annotations

from worker.bench.baseline import BaselineResult
from worker.bench.config import BenchConfig
from worker.bench.gate_timing import GatePass
from worker.bench.report import cluster_rows
from worker.bench.throughput import ThroughputComparison, TimedRun, cluster_section, per_node_per_batch, spread


def _baseline(rate: float) -> TimedRun:
    run = TimedRun("baseline", measured_records=int(rate), seconds=1.0)
    run.passes.append(BaselineResult(records=int(rate), measured_records=int(rate), seconds=1.0, batches=2, transactions=1))
    return run


def _gate(rate: float) -> TimedRun:
    run = TimedRun("gate", measured_records=int(rate), seconds=1.0)
    progress = {"allowed": 8, "suppressed": 2, "dead_lettered": 0, "transactions": 1, "fail_closed_pauses": 0, "state_round_trips": 2}
    run.passes.append(GatePass(records=10, measured_records=int(rate), seconds=1.0, batches=2, measured_batches=1,
                               progress=progress, read_requests=2, phases={"consume": 0.1}))
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


def _cluster_gate(rate: float, by_node: dict[str, int], *, batches: int = 2) -> TimedRun:
    run = TimedRun("cluster-gate", measured_records=int(rate), seconds=1.0)
    progress = {"allowed": 8, "suppressed": 2, "dead_lettered": 0, "transactions": 1, "fail_closed_pauses": 0,
                "state_round_trips": batches}
    run.passes.append(GatePass(records=10, measured_records=int(rate), seconds=1.0, batches=batches, measured_batches=batches - 1,
                               progress=progress, read_requests=sum(by_node.values()), phases={"state": 0.5},
                               read_requests_by_node=by_node))
    return run


def test_read_requests_per_node_per_batch_sums_every_pass_of_every_run():
    runs = [_cluster_gate(50, {"a:1": 12, "b:2": 8, "c:3": 12}, batches=2), _cluster_gate(50, {"a:1": 6, "b:2": 4}, batches=1)]
    assert per_node_per_batch([p for run in runs for p in run.passes]) == {"a:1": 6.0, "b:2": 4.0, "c:3": 4.0}
    assert per_node_per_batch([]) == {}


def test_cluster_section_holds_each_run_against_the_same_baselines():
    baselines = [_baseline(100), _baseline(200), _baseline(100)]
    gates = [_cluster_gate(60, {"a:1": 12, "b:2": 8, "c:3": 12}), _cluster_gate(30, {"a:1": 12, "b:2": 8, "c:3": 0})]
    section = cluster_section(baselines, gates, input_records=10, masters=3)
    assert section["ratio_runs"] == [0.4, 0.2]
    assert section["ratio"] == 0.3
    assert section["records_per_second"] == 45  # median of 60 and 30
    assert [run["records_per_second"] for run in section["runs"]] == [60, 30]
    assert section["spread"] == round(30 / 45, 3)
    assert section["masters"] == 3
    assert section["batches"] == 4 and section["round_trips_per_batch"] == 1.0
    assert section["read_requests_per_batch"] == 13.0  # (32 + 20) / 4
    assert section["read_requests_per_node_per_batch"] == {"a:1": 6.0, "b:2": 4.0, "c:3": 3.0}
    assert sum(section["read_requests_per_node_per_batch"].values()) == section["read_requests_per_batch"]
    assert section["nodes_with_read_requests"] == 3
    assert section["allowed"] == 8 and section["suppressed_share"] == 0.2


def test_cluster_rows_only_with_a_cluster_section():
    assert cluster_rows(None) == []
    section = cluster_section([_baseline(100), _baseline(100)], [_cluster_gate(50, {"a:1": 4, "b:2": 2})], input_records=10, masters=2)
    section["to_standalone_gate"] = 0.9
    rows = dict(cluster_rows(section))
    assert rows["gate on cluster (2 masters)"].startswith("50 records/s")
    assert rows["cluster: EVALSHA per master per batch"] == "a:1 2.0, b:2 1.0"
    assert rows["cluster gate / baseline"] == "0.5"
