"""The throughput comparison: the bare loop and the gate, alternated, each run long enough to be steady.

A single pass over the medium bench's input takes the bare loop about half a
second, and a 2-core box shared with Kafka, Redis and other work changes
speed from one second to the next, so one pass of each said little. Here:

* a **run** is one or more passes over the same input topic, each with a
  consumer group of its own (so it reads the topic from the start), repeated
  until the measured time reaches ``min_run_seconds``; its rate is the
  measured records over the measured seconds of all its passes (a pass's
  start - group join, ``init_transactions``, first batch - is not counted);
* runs alternate baseline, gate, baseline, ..., baseline (``rounds`` gate
  runs), so a drift of the machine shows as spread between neighbours rather
  than as a false ratio: each gate run is held against the mean of the two
  baseline runs either side, and the reported figures are medians, with the
  spread ((max - min) / median) next to them.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.cluster import RedisCluster
from rich.console import Console

from worker.bench.baseline import BareTransactionalLoop, BaselineResult
from worker.bench.config import BenchConfig, BenchFailed, BenchSettings
from worker.bench.gate_timing import GatePass, gate_section, read_requests_by_node, time_gate_pass
from worker.config import Settings
from worker.state.connection import StateClient

logger = logging.getLogger(__name__)

# A run of a tiny input would otherwise repeat its passes (each with its own
# group join) for minutes to fill min_run_seconds.
MAX_PASSES_PER_RUN = 25


@dataclass
class TimedRun:
    """One run: its passes' measured records and seconds."""

    kind: str
    measured_records: int = 0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    passes: list[Any] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.measured_records / self.seconds if self.seconds > 0 else 0.0


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / median: how far apart the runs of one kind are."""
    if not values:
        return None
    middle = statistics.median(values)
    return round((max(values) - min(values)) / middle, 3) if middle > 0 else None


def with_group(settings: Settings, group_id: str) -> Settings:
    """``settings`` with the gate's consumer group replaced: a pass reads the input from the start."""
    return settings.model_copy(update={"gate": settings.gate.model_copy(update={"group_id": group_id})})


class ThroughputComparison:
    """Baseline and gate runs, alternated; every consumer group it made is in :attr:`groups` (for teardown)."""

    def __init__(
        self, names: BenchSettings, config: BenchConfig, client: StateClient, *, console: Console | None,
        profile: Path | None = None,
    ) -> None:
        self._names = names
        self._config = config
        self._client = client
        self._console = console
        self._profile = profile
        self.groups: list[str] = []
        self.stage_seconds = {"baseline": 0.0, "gate": 0.0}
        self.baselines: list[TimedRun] = []  # of :meth:`run`, for the cluster's ratios

    def run(self) -> dict[str, Any]:
        """The ``baseline``, ``gate`` and ``ratio`` sections of the results."""
        baselines: list[TimedRun] = [self._timed("baseline", 0)]
        gates: list[TimedRun] = []
        for round_index in range(self._config.rounds):
            gates.append(self._timed("gate", round_index))
            baselines.append(self._timed("baseline", round_index + 1))
        self.baselines = baselines
        return self._sections(baselines, gates)

    def run_cluster(self, settings: Settings, client: RedisCluster) -> dict[str, Any]:
        """The ``cluster`` section: ``rounds`` gate runs against the cluster of ``settings``, after :meth:`run`.

        Same sends, same run length; each run is held against the same
        baselines as the standalone gate run of its round (the baseline does
        not touch Redis).
        """
        gates = [self._timed("cluster-gate", index, settings=settings, client=client) for index in range(self._config.rounds)]
        return cluster_section(self.baselines, gates, input_records=self._config.sends, masters=len(read_requests_by_node(client)))

    def _timed(self, kind: str, index: int, *, settings: Settings | None = None, client: StateClient | None = None) -> TimedRun:
        run = TimedRun(kind)
        started = time.monotonic()
        while not run.passes or (run.seconds < self._config.min_run_seconds and len(run.passes) < MAX_PASSES_PER_RUN):
            group = f"{self._names.prefix}-{kind}-r{index}p{len(run.passes)}"
            self.groups.append(group)
            one: GatePass | BaselineResult
            if kind == "baseline":
                one = self._baseline_pass(group)
            else:
                one = self._gate_pass(group, first=kind == "gate" and index == 0 and not run.passes, settings=settings, client=client)
            run.passes.append(one)
            run.measured_records += one.measured_records
            run.seconds += one.seconds
        if run.seconds < self._config.min_run_seconds:
            logger.warning(
                "bench run shorter than asked: more sends would make it steadier",
                extra={"kind": kind, "passes": len(run.passes), "seconds": round(run.seconds, 2)},
            )
        run.wall_seconds = time.monotonic() - started
        self.stage_seconds[kind] = self.stage_seconds.get(kind, 0.0) + run.wall_seconds
        return run

    def _baseline_pass(self, group: str) -> BaselineResult:
        settings = with_group(self._names.baseline, group)
        loop = BareTransactionalLoop(
            settings=settings, input_topic=settings.topics.requested, output_topic=settings.topics.allowed, group_id=group,
        )
        result = loop.run(max_messages=self._config.sends)
        if result.records < self._config.sends:
            raise BenchFailed(f"baseline: moved {result.records} of {self._config.sends} records before its timeout")
        return result

    def _gate_pass(
        self, group: str, *, first: bool, settings: Settings | None = None, client: StateClient | None = None
    ) -> GatePass:
        # Only the very first pass is profiled: one call tree, not a pile of them.
        profile = self._profile if first else None
        return time_gate_pass(
            with_group(settings or self._names.main, group), self._config.sends, client or self._client,
            console=self._console, profile=profile,
        )

    def _sections(self, baselines: list[TimedRun], gates: list[TimedRun]) -> dict[str, Any]:
        baseline_rates = [run.records_per_second for run in baselines]
        gate_rates = [run.records_per_second for run in gates]
        # Each gate run against the baselines either side of it.
        ratios = neighbour_ratios(baseline_rates, gate_rates)
        baseline_passes: list[BaselineResult] = [p for run in baselines for p in run.passes]
        gate_passes: list[GatePass] = [p for run in gates for p in run.passes]
        gate = gate_section(gate_passes, input_records=self._config.sends)
        gate.update(_rates(gates))
        baseline = {
            "records": self._config.sends,
            "passes": len(baseline_passes),
            "seconds": round(sum(p.seconds for p in baseline_passes), 3),
            "batches": sum(p.batches for p in baseline_passes),
            "transactions": sum(p.transactions for p in baseline_passes),
            **_rates(baselines),
        }
        return {
            "baseline": baseline,
            "gate": gate,
            "ratio": round(statistics.median(ratios), 3) if ratios else None,
            "ratio_runs": [round(r, 3) for r in ratios],
            "ratio_spread": spread(ratios),
            "throughput_order": " ".join("B" if i % 2 == 0 else "G" for i in range(len(baselines) + len(gates))),
            "min_run_seconds": self._config.min_run_seconds,
        }


def neighbour_ratios(baseline_rates: Sequence[float], gate_rates: Sequence[float]) -> list[float]:
    """Gate run ``i`` over the mean of baseline runs ``i`` and ``i + 1`` (the ones either side of it)."""
    return [
        gate / ((before + after) / 2)
        for gate, before, after in zip(gate_rates, baseline_rates, baseline_rates[1:], strict=False)
        if before + after > 0
    ]


def per_node_per_batch(passes: Sequence[GatePass]) -> dict[str, float]:
    """State read requests (EVALSHA) each master served for the gate, over the gate's batches (all passes summed)."""
    batches = sum(p.batches for p in passes)
    calls: dict[str, int] = {}
    for p in passes:
        for node, count in p.read_requests_by_node.items():
            calls[node] = calls.get(node, 0) + count
    return {node: round(count / batches, 3) if batches else 0.0 for node, count in sorted(calls.items())}


def cluster_section(
    baselines: Sequence[TimedRun], gates: Sequence[TimedRun], *, input_records: int, masters: int
) -> dict[str, Any]:
    """The bench's ``cluster`` section: the gate's runs against a Redis Cluster, per master and per batch."""
    passes: list[GatePass] = [p for run in gates for p in run.passes]
    gate = gate_section(passes, input_records=input_records)
    ratios = neighbour_ratios([run.records_per_second for run in baselines], [run.records_per_second for run in gates])
    by_node = per_node_per_batch(passes)
    return {
        **{name: gate[name] for name in (
            "records", "passes", "records_decided", "seconds", "allowed", "suppressed", "dead_lettered", "suppressed_share",
            "batches", "mean_batch", "transactions", "fail_closed_pauses", "state_round_trips", "round_trips_per_batch",
            "redis_read_requests", "read_requests_per_batch", "phases",
        )},
        **_rates(gates),
        "ratio": round(statistics.median(ratios), 3) if ratios else None,
        "ratio_runs": [round(r, 3) for r in ratios],
        "ratio_spread": spread(ratios),
        "ratio_note": "each cluster gate run over the standalone phase's baselines either side of the standalone gate run "
        "of the same round (the baseline does not touch Redis)",
        "masters": masters,
        "read_requests_per_node_per_batch": by_node,
        "nodes_with_read_requests": sum(1 for value in by_node.values() if value > 0),
        "round_trips_per_node_per_batch_note": "redis-py's cluster pipeline sends one request per node a batch's "
        "script calls map to, so each master a batch reads costs that batch one round trip; "
        "round_trips_per_batch counts the gate's pipelines (one per batch), not nodes",
    }


def _rates(runs: Sequence[TimedRun]) -> dict[str, Any]:
    rates = [run.records_per_second for run in runs]
    return {
        "records_per_second": round(statistics.median(rates)) if rates else 0,
        "runs": [
            {"records_per_second": round(run.records_per_second), "seconds": round(run.seconds, 3), "passes": len(run.passes)}
            for run in runs
        ],
        "spread": spread(rates),
    }
