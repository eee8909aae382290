"""The real gate over the bench's input, timed the way the bare loop is, with its time split by phase.

One :func:`time_gate_pass` is one pass over the input topic with a consumer
group of its own; :func:`gate_section` sums passes into the bench's ``gate``
section (rate, decisions, round trips, phases).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.cluster import RedisCluster
from rich.console import Console

from worker.config import Settings
from worker.errors import SendgateError
from worker.loadgen.progress import progress_bar, tracked
from worker.state.connection import StateClient, per_primary_info

PHASES = ("consume", "decode", "state", "produce", "commit")
NO_PROGRESS_TIMEOUT_SECONDS = 120.0


class GateStalled(SendgateError):
    """The measured gate stopped making progress or failed; the message says how far it got."""


def _profiler() -> Any:
    """A started pyinstrument profiler of the calling thread."""
    from pyinstrument import Profiler  # type: ignore[import-not-found, unused-ignore]  # optional (--profile-gate), not a dependency

    profiler = Profiler(interval=0.002)  # coarse enough to keep its own cost small
    profiler.start()
    return profiler


def _phase_sums(registry: Any) -> dict[str, float]:
    name = "sendgate_gate_batch_phase_seconds_sum"
    return {phase: registry.get_sample_value(name, {"phase": phase}) or 0.0 for phase in PHASES}


def read_requests_by_node(client: StateClient) -> dict[str, int]:
    """State read requests served so far by each master (``host:port``); a single server is ``"standalone"``.

    A standalone Redis is read with one ``MULTI``/``EXEC`` per batch, a cluster
    with the read script (``EVALSHA``) per shard: both are counted.
    """

    def requests(info: dict[str, Any]) -> int:
        return sum(int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "exec"))

    if isinstance(client, RedisCluster):
        replies = client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        # Several masters answer as {"host:port": info}; redis-py unwraps a single answer.
        by_node = replies if replies and all(":" in str(name) for name in replies) else {"primary": replies}
        return {str(node): requests(info) for node, info in by_node.items()}
    return {"standalone": sum(requests(info) for info in per_primary_info(client, "commandstats"))}


@dataclass
class GatePass:
    """One pass of the gate over the input. ``measured_*`` and ``phases`` count from the end of its first batch."""

    records: int
    measured_records: int
    seconds: float
    batches: int
    measured_batches: int
    progress: dict[str, int]
    read_requests: int
    phases: dict[str, float] = field(default_factory=dict)
    read_requests_by_node: dict[str, int] = field(default_factory=dict)  # the same calls, by master

    @property
    def records_per_second(self) -> float:
        return self.measured_records / self.seconds if self.seconds > 0 else 0.0


def time_gate_pass(
    settings: Settings, records: int, client: StateClient, *, console: Console | None, profile: Path | None = None
) -> GatePass:
    """Run the real gate over ``records`` waiting input records; counting starts after its first batch.

    With ``profile``, the gate's thread runs under pyinstrument (a sampling
    profiler, installed separately) and its call tree is written there.
    """
    from worker.assembly import Runtime, build_gate

    runtime = Runtime.create(settings)
    gate = build_gate(runtime)
    failure: list[BaseException] = []

    def work() -> None:
        profiler = _profiler() if profile is not None else None
        try:
            gate.run(max_messages=records)
        except BaseException as exc:  # re-raised on this thread
            failure.append(exc)
        finally:
            if profiler is not None and profile is not None:
                profiler.stop()
                profile.parent.mkdir(parents=True, exist_ok=True)
                profile.write_text(profiler.output_text(unicode=False, color=False))

    requests_before = read_requests_by_node(client)
    thread = threading.Thread(target=work, name="sendgate-bench-gate", daemon=True)
    thread.start()
    first: tuple[float, int, int, dict[str, float]] | None = None
    last_change, last_consumed = time.monotonic(), 0
    with progress_bar(console) as progress:
        update = tracked(progress, "gate", records)
        while thread.is_alive():
            thread.join(0.02)
            p = gate.progress
            now = time.monotonic()
            if first is None and p.consumed > 0:
                first = (now, p.consumed, p.batches, _phase_sums(runtime.metrics.registry))
            if p.consumed != last_consumed:
                last_change, last_consumed = now, p.consumed
                update(p.consumed)
            elif now - last_change > NO_PROGRESS_TIMEOUT_SECONDS:
                runtime.stop.set()
                thread.join(30)
                raise GateStalled(f"gate: no progress for {NO_PROGRESS_TIMEOUT_SECONDS:g}s ({p.fail_closed_pauses} fail-closed pauses)")
    ended = time.monotonic()
    requests_after = read_requests_by_node(client)
    by_node = {node: calls - requests_before.get(node, 0) for node, calls in requests_after.items()}
    if failure:
        raise GateStalled(f"gate: {type(failure[0]).__name__}: {failure[0]}") from failure[0]
    p = gate.progress
    if first is None or p.consumed < records:
        raise GateStalled(f"gate: decided {p.consumed} of {records} records")
    started, consumed_first, batches_first, sums_first = first
    sums = {phase: value - sums_first[phase] for phase, value in _phase_sums(runtime.metrics.registry).items()}
    return GatePass(
        records=p.consumed,
        measured_records=p.consumed - consumed_first,
        seconds=ended - started,
        batches=p.batches,
        measured_batches=p.batches - batches_first,
        progress={
            "allowed": p.allowed, "suppressed": p.suppressed, "dead_lettered": p.dead_lettered,
            "transactions": p.committed_transactions, "fail_closed_pauses": p.fail_closed_pauses,
            "state_round_trips": p.state_round_trips,
        },
        read_requests=sum(by_node.values()),
        phases=sums,
        read_requests_by_node=by_node,
    )


def gate_section(passes: Sequence[GatePass], *, input_records: int) -> dict[str, Any]:
    """The bench's ``gate`` section over every pass of every gate run: rates from the measured part, decisions of one pass.

    Each pass decides the same input on the same state, so the decision counts
    are one pass's; rates, phases and round trips are summed over all.
    """
    measured = sum(p.measured_records for p in passes)
    seconds = sum(p.seconds for p in passes)
    consumed = sum(p.records for p in passes)
    batches = sum(p.batches for p in passes)
    trips = sum(p.progress["state_round_trips"] for p in passes)
    requests = sum(p.read_requests for p in passes)
    sums: dict[str, float] = {}
    for p in passes:
        for phase, value in p.phases.items():
            sums[phase] = sums.get(phase, 0.0) + value
    sums["other"] = max(0.0, seconds - sum(sums.values()))
    one = passes[0].progress
    return {
        "records": input_records,
        "passes": len(passes),
        "records_decided": consumed,
        "seconds": round(seconds, 3),
        "records_per_second": round(measured / seconds) if seconds > 0 else 0,
        "allowed": one["allowed"],
        "suppressed": one["suppressed"],
        "dead_lettered": one["dead_lettered"],
        "suppressed_share": round(one["suppressed"] / passes[0].records, 4) if passes[0].records else 0,
        "batches": batches,
        "mean_batch": round(consumed / batches, 1) if batches else 0,
        "transactions": sum(p.progress["transactions"] for p in passes),
        "fail_closed_pauses": sum(p.progress["fail_closed_pauses"] for p in passes),
        "state_round_trips": trips,
        "round_trips_per_batch": round(trips / batches, 3) if batches else None,
        "redis_read_requests": requests,
        "read_requests_per_batch": round(requests / batches, 3) if batches else None,
        "phases": {
            phase: {
                "seconds": round(value, 3),
                "share": round(value / seconds, 3) if seconds > 0 else 0,
                "us_per_record": round(value / measured * 1e6, 1) if measured else 0,
            }
            for phase, value in sums.items()
        },
        "phase_note": "decode includes prepare; state is the wait for the batch's state read (Redis and the freshness barrier) "
        "that deciding and producing the previous batch did not hide; produce includes the core's decide (one call per batch); "
        "other is the loop between phases",
        "measured_batches": sum(p.measured_batches for p in passes),
    }
