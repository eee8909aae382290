"""End-to-end latency at a fixed offered load: a gate process, a paced producer and a probe on the outputs."""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console

from worker.bench.config import BenchFailed, now_ms
from worker.bench.gate_timing import PHASES
from worker.bench.plan import BenchPlan
from worker.codec import AvroCodec
from worker.config import Settings
from worker.kafka.batches import available_batch
from worker.kafka.clients import idempotent_producer_config
from worker.loadgen.producing import ProduceReport, encoded_sends, produce_encoded, produce_sends
from worker.loadgen.progress import progress_bar, tracked

WARM_UP_RECORDS = 20
# Before the measured requests, this long at the offered rate, not measured: the
# clock starts on a gate already at that load (its consumer's fetch buffers, the
# probe's and producer's queues grown), not on its one-step ramp from idle,
# whose backlog a gate at half its speed then works off for seconds.
LEAD_IN_SECONDS = 2.0


def gate_process(settings: Settings, results: Any) -> None:
    """A gate in its own process (spawned): stops on SIGTERM, reports its progress on ``results``."""
    from worker import logs
    from worker.assembly import Runtime, build_gate

    logs.configure(settings.log)  # as the parent command does: same structured lines
    runtime = Runtime.create(settings)
    runtime.stop.install_signal_handlers()
    try:
        progress = build_gate(runtime).run()
        results.put({"progress": dataclasses.asdict(progress), "phases": _phase_totals(runtime.metrics.registry)})
    except BaseException as exc:
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def _phase_totals(registry: Any) -> dict[str, dict[str, Any]]:
    """Seconds and count per phase of the gate process (commit: one observation per transaction)."""
    name = "sendgate_gate_batch_phase_seconds"
    totals: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        count = registry.get_sample_value(f"{name}_count", {"phase": phase}) or 0.0
        seconds = registry.get_sample_value(f"{name}_sum", {"phase": phase}) or 0.0
        totals[phase] = {"seconds": round(seconds, 3), "count": int(count), "mean_ms": round(seconds / count * 1000, 2) if count else None}
    return totals


class LatencyProbe:
    """Reads the gate's outputs under read_committed and keeps, per measured request, now − its send time.

    Send times are taken by the producing loop (:meth:`stamped`) and looked up
    by message key, so while the clock runs neither side encodes or decodes
    Avro: on a 2-core box that work would be taken from the gate it measures.

    Each latency is also split at the output record's timestamp (the gate's
    ``produce()``, CreateTime): before it, the request waits for the gate
    (broker, fetch, the gate's queue and its batch); after it, for the
    transaction's commit and the probe's fetch. Which half grows says whether
    the gate is behind its input or its commit cadence is the cost.
    """

    def __init__(self, settings: Settings, *, measured_prefix: bytes) -> None:
        self._topics = settings.topics
        self._prefix = measured_prefix
        self._consumer = Consumer(
            {
                **settings.kafka.common_config(),
                "group.id": f"{settings.gate.group_id}-probe",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,  # the probe's own wait must not add to what it measures
            }
        )
        self.sent_at: dict[bytes, float] = {}
        self.latencies_ms: list[float] = []
        self.to_output_ms: list[float] = []  # send → the gate's produce() of its output
        self.output_to_visible_ms: list[float] = []  # that produce() → visible under read_committed
        self.seen = 0
        self.unmatched = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sendgate-latency-probe", daemon=True)

    def stamped(self, items: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """``items`` as the paced producer pulls them, each key's send time noted as it goes out."""
        sent_at = self.sent_at
        for key, value in items:
            sent_at[key] = time.monotonic()
            yield key, value

    def start(self) -> None:
        topics = [self._topics.allowed, self._topics.suppressed, self._topics.dead_letter]
        metadata = self._consumer.list_topics(timeout=10).topics
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata[t].partitions])
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def wait_for(self, count: int, timeout: float, *, alive: Callable[[], bool] = lambda: True) -> bool:
        """Wait until ``count`` records were seen; give up at ``timeout`` or when ``alive()`` turns false."""
        deadline = time.monotonic() + timeout
        while self.seen < count and time.monotonic() < deadline and alive():
            time.sleep(0.05)
        return self.seen >= count

    def _run(self) -> None:
        prefix, sent_at = self._prefix, self.sent_at
        # Output timestamps are wall-clock milliseconds; send times are monotonic.
        wall_minus_monotonic_ms = (time.time() - time.monotonic()) * 1000
        while not self._stop.is_set():
            # Returns as soon as anything is there: the clock is read when it returns, so a wait
            # for a fuller batch would be measured too.
            messages = available_batch(self._consumer, 1000, 0.05)
            now = time.monotonic()
            for message in messages:
                if message.error() is not None:
                    continue
                self.seen += 1
                key = message.key() or b""
                if not key.startswith(prefix):
                    continue
                sent = sent_at.get(key)
                if sent is None:  # every output keeps its request's key: this would be a bench bug
                    self.unmatched += 1
                else:
                    sent_ms, now_ms = sent * 1000, now * 1000
                    produced_ms = message.timestamp()[1] - wall_minus_monotonic_ms
                    self.latencies_ms.append(now_ms - sent_ms)
                    self.to_output_ms.append(produced_ms - sent_ms)
                    self.output_to_visible_ms.append(now_ms - produced_ms)


def measure_latency(
    settings: Settings, plan: BenchPlan, codec: AvroCodec, *, rate: float, seconds: float, first_index: int,
    console: Console | None, on_gate_started: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """End-to-end latency through a gate process at ``rate`` requests/s for ``seconds``.

    The measured requests follow ``LEAD_IN_SECONDS`` of unmeasured ones at the
    same rate, so the percentiles are the gate's at that load, not its ramp.

    ``on_gate_started`` is given the gate process's pid once it decides (a
    profiler can attach to it, see tests/perf/bench_latency.py).
    """
    context = multiprocessing.get_context("spawn")  # librdkafka threads do not survive fork
    results = context.Queue()
    child = context.Process(target=gate_process, args=(settings, results), name="sendgate-bench-gate", daemon=True)
    probe = LatencyProbe(settings, measured_prefix=b"lat-")
    producer = Producer(idempotent_producer_config(settings))  # a campaign engine's producer, not the bulk one
    count = max(1, int(rate * seconds))
    topic = settings.topics.requested
    # Encoded before the clock runs; requested_at is then the encoding time, which the probe does not use.
    report = ProduceReport(topic)
    measured = list(encoded_sends(plan.sends(count, base_time_ms=now_ms(), start=first_index, id_prefix="lat"), codec, report.kinds))
    lead_in_report = ProduceReport(topic)
    lead_in = list(encoded_sends(
        plan.sends(int(rate * LEAD_IN_SECONDS), base_time_ms=now_ms(), start=first_index + count + WARM_UP_RECORDS, id_prefix="lead"),
        codec, lead_in_report.kinds,
    ))
    child.start()
    probe.start()
    try:
        # Warm-up: the gate process is up, assigned and deciding before the clock runs.
        produce_sends(settings, plan.sends(WARM_UP_RECORDS, base_time_ms=now_ms(), start=first_index + count, id_prefix="warm"),
                      codec=codec, producer=producer, stamp_now=True)
        if not probe.wait_for(WARM_UP_RECORDS, timeout=120, alive=child.is_alive):
            raise BenchFailed(f"latency: the gate process decided {probe.seen} of {WARM_UP_RECORDS} warm-up requests "
                              f"(exit code {child.exitcode})")
        if on_gate_started is not None and child.pid is not None:
            on_gate_started(child.pid)
        with progress_bar(console) as progress:
            # Not flushed in between: the measured requests follow the lead-in at the same pace.
            produce_encoded(producer, topic, lead_in, lead_in_report, rate=rate, flush=False)
            produce_encoded(
                producer, topic, probe.stamped(measured), report, rate=rate,
                on_progress=tracked(progress, f"paced at {rate:,.0f}/s", count),
            )
        if not probe.wait_for(WARM_UP_RECORDS + len(lead_in) + count, timeout=60, alive=child.is_alive):
            raise BenchFailed(f"latency: {probe.seen - WARM_UP_RECORDS - len(lead_in)} of {count} requests visible after 60s")
    finally:
        probe.stop()
        child.terminate()  # SIGTERM: the gate finishes its transaction and reports
        child.join(60)
        if child.is_alive():
            child.kill()
            child.join(10)
    if probe.unmatched:
        raise BenchFailed(f"latency: {probe.unmatched} outputs carry a key that was never sent")
    try:
        outcome = results.get(timeout=5)
    except queue.Empty:
        outcome = {"error": f"gate process exited with {child.exitcode} without a report"}
    latencies = sorted(round(ms) for ms in probe.latencies_ms)
    gate_progress = outcome.get("progress") or {}
    mean_batch = gate_progress["consumed"] / gate_progress["batches"] if gate_progress.get("batches") else None
    return {
        "offered_rate": rate,
        "achieved_rate": round(report.records_per_second),
        "seconds": round(report.seconds, 2),
        "lead_in_seconds": LEAD_IN_SECONDS,
        "records": len(latencies),
        "p50_ms": _percentile(latencies, 0.50),
        "p90_ms": _percentile(latencies, 0.90),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "split_ms": {
            "to_gate_produce": _summary(probe.to_output_ms),
            "gate_produce_to_visible": _summary(probe.output_to_visible_ms),
        },
        "commit_interval_ms": round(settings.gate.commit_interval_seconds * 1000),
        "commit_when_caught_up": settings.gate.commit_when_caught_up,
        "gate_process": outcome,
        # Batches near batch_max_messages mean the gate process fell behind the
        # offered load: the percentiles then measure its queue, not its commit cadence.
        "gate_mean_batch": round(mean_batch, 1) if mean_batch else None,
    }


def _summary(values: list[float]) -> dict[str, int | None]:
    ordered = sorted(round(v) for v in values)
    return {"p50": _percentile(ordered, 0.50), "p90": _percentile(ordered, 0.90), "p99": _percentile(ordered, 0.99)}


def _percentile(ordered: list[int], q: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]
