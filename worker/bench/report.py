"""The bench's results against its targets, as rich tables."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from worker.config import Settings


def check_targets(results: dict[str, Any], settings: Settings) -> dict[str, dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    gate = results.get("gate", {})
    limit_ms = 2 * settings.gate.commit_interval_seconds * 1000
    checks: list[tuple[str, Any, Callable[[Any], bool]]] = [
        ("gate/baseline >= 0.5 (aim 0.75)", results.get("ratio"), lambda v: v >= 0.5),
        ("state round trips per batch == 1", gate.get("round_trips_per_batch"), lambda v: v == 1),
        (f"p99 end-to-end <= {limit_ms:.0f} ms at half max", results.get("latency", {}).get("p99_ms"), lambda v: v <= limit_ms),
        ("rebuild >= 50,000 events/s", results.get("rebuild", {}).get("events_per_second"), lambda v: v >= 50_000),
        ("Redis <= 120 bytes per fact", results.get("rebuild", {}).get("bytes_per_fact"), lambda v: v <= 120),
    ]
    return {name: {"value": value, "met": value is not None and bool(ok(value))} for name, value, ok in checks}


def render(console: Console, results: dict[str, Any]) -> None:
    machine = results["machine"]
    caption = (
        f"{machine['cores']} cores, Python {machine['python']}, librdkafka {machine['librdkafka']}, "
        f"Kafka {machine['kafka']}, Redis {machine['redis']}, load {machine['load_average_start']}; "
        f"run {results.get('duration_seconds', '?')} s"
    )
    table = Table(title="sendgate bench", caption=caption)
    for column in ("measure", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    gate, baseline = results.get("gate", {}), results.get("baseline", {})
    rebuild, latency = results.get("rebuild", {}), results.get("latency", {})
    rows = [
        ("baseline (bare transactional loop)", f"{baseline.get('records_per_second', 0):,} records/s{_runs(baseline)}"),
        ("gate", f"{gate.get('records_per_second', 0):,} records/s{_runs(gate)}, {gate.get('suppressed_share', 0):.1%} suppressed"),
        ("gate / baseline", f"{results.get('ratio')}{_ratio_runs(results)}"),
        ("state round trips per batch", f"{gate.get('round_trips_per_batch')} (Redis requests: {gate.get('read_requests_per_batch')}, "
         f"{gate.get('mean_batch')} records/batch)"),
        (f"end-to-end at {latency.get('offered_rate', 0):,.0f}/s: p50 / p99",
         f"{latency.get('p50_ms')} / {latency.get('p99_ms')} ms (commit every {latency.get('commit_interval_ms')} ms"
         f"{' or once caught up' if latency.get('commit_when_caught_up') else ''})"),
        ("rebuild", f"{rebuild.get('events_per_second', 0):,} events/s ({rebuild.get('events', 0):,} events)"),
        ("Redis memory per fact", f"{rebuild.get('bytes_per_fact')} B (MEMORY USAGE: {rebuild.get('memory_usage_bytes_per_fact')} B, "
         f"{rebuild.get('facts', 0):,} facts)"),
    ]
    rows += cluster_rows(results.get("cluster"))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    phases = Table(title="gate time by phase")
    for column in ("phase", "seconds", "share", "µs/record"):
        phases.add_column(column, justify="left" if column == "phase" else "right")
    for phase, split in gate.get("phases", {}).items():
        phases.add_row(phase, f"{split['seconds']:.2f}", f"{split['share']:.1%}", f"{split['us_per_record']:.1f}")
    console.print(phases)
    targets = Table(title="targets")
    for column in ("target", "value", "met"):
        targets.add_column(column)
    for name, check in results.get("targets", {}).items():
        targets.add_row(name, str(check["value"]), "[green]yes[/green]" if check["met"] else "[red]no[/red]")
    console.print(targets)


def cluster_rows(cluster: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The table's rows for the gate on the Redis Cluster (``--also-cluster``); none without it."""
    if not cluster:
        return []
    per_node = cluster.get("read_requests_per_node_per_batch", {})
    nodes = ", ".join(f"{node} {value}" for node, value in per_node.items())
    return [
        (f"gate on cluster ({cluster.get('masters')} masters)",
         f"{cluster.get('records_per_second', 0):,} records/s{_runs(cluster)}, {cluster.get('to_standalone_gate')}× standalone gate"),
        ("cluster gate / baseline", f"{cluster.get('ratio')}{_ratio_runs(cluster)}"),
        ("cluster: round trips per batch", f"{cluster.get('round_trips_per_batch')} pipeline (one request per master it reads; "
         f"EVALSHA: {cluster.get('read_requests_per_batch')}, {cluster.get('mean_batch')} records/batch)"),
        ("cluster: EVALSHA per master per batch", nodes or "?"),
    ]


def _runs(section: dict[str, Any]) -> str:
    """The runs behind a median rate: their range and spread."""
    runs = [run["records_per_second"] for run in section.get("runs", [])]
    if len(runs) < 2:
        return ""
    return f" (median of {len(runs)}: {min(runs):,}–{max(runs):,}, spread {_percent(section.get('spread'))})"


def _ratio_runs(results: dict[str, Any]) -> str:
    ratios = results.get("ratio_runs", [])
    if len(ratios) < 2:
        return ""
    return f" (median of {len(ratios)}: {min(ratios)}–{max(ratios)}, spread {_percent(results.get('ratio_spread'))})"


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{value:.1%}"


def default_output() -> Path:
    return Path("bench-results") / f"bench-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
