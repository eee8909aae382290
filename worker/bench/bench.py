"""``sendgate bench``: what the gate costs on this cluster, and whether it meets its targets.

One run, on topics and a Redis key prefix of its own (created, then deleted):

1. ``preload``  — the bench's preference topic (:class:`~worker.loadgen.traffic.BenchPlan`): opt-outs and contact facts;
2. ``rebuild``  — :func:`worker.ops.rebuild.rebuild` applies it into an empty store: events/s, Redis bytes per fact;
3. ``sends``    — the send requests, about a fifth of them to be suppressed;
4. ``baseline`` — the bare transactional loop over them (:mod:`worker.bench.baseline`);
5. ``gate``     — the real gate over the same records: records/s, state round trips per batch, time per phase;
6. ``latency``  — a gate process at a fixed offered load below saturation (half the gate's rate):
   from produce to visible under read_committed, p50/p99.

Results go to a rich table and a JSON file, next to the machine they ran on.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import click
import confluent_kafka
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from worker.bench.baseline import BareTransactionalLoop, measure_gate
from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import SendgateError
from worker.kafka.admin import create_topics, delete_topics
from worker.kafka.clients import idempotent_producer_config
from worker.loadgen.generate import (
    ProduceReport,
    bulk_producer,
    encoded_sends,
    produce_encoded,
    produce_events,
    produce_sends,
    progress_bar,
    tracked,
)
from worker.loadgen.traffic import BenchPlan
from worker.terminal import console, run_guarded

logger = logging.getLogger(__name__)

WARM_UP_RECORDS = 20


class BenchFailed(SendgateError):
    """A bench stage could not complete; the message names the stage and why."""


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Sizes of one run; :data:`QUICK` is the seconds-long preset the tests use."""

    sends: int = 500_000
    opt_outs: int = 1_000_000
    contact_facts: int = 100_000
    sms_opt_ins: int = 100_000
    clean_contacts: int = 250_000
    orgs: int = 50
    partitions: int = 6
    latency_seconds: float = 20.0
    latency_rate: float | None = None  # None: half the gate's measured throughput
    suppressed_share: float = 0.2
    seed: int = 1


QUICK = BenchConfig(
    sends=2_000, opt_outs=3_000, contact_facts=300, sms_opt_ins=300, clean_contacts=1_000,
    orgs=3, partitions=3, latency_seconds=2.0,
)


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """The settings of each part of a run: all names carry the run's prefix."""

    prefix: str
    main: Settings  # preload, rebuild and the gate
    baseline: Settings  # same input, its own output topic and group
    latency: Settings  # same state, its own send topics and group

    def topics(self) -> list[str]:
        names = [*self.main.topics.all_names(), self.baseline.topics.allowed, *self.latency.topics.all_names()]
        return sorted(set(names))

    def groups(self) -> list[str]:
        return [self.main.gate.group_id, self.main.preferences.group_id, self.baseline.gate.group_id, self.latency.gate.group_id]


def bench_settings(base: Settings, *, run_id: str, partitions: int) -> BenchSettings:
    prefix = f"bench-{run_id}"
    topics = base.topics.model_copy(
        update={
            "requested": f"{prefix}.sends.requested", "allowed": f"{prefix}.sends.allowed",
            "suppressed": f"{prefix}.sends.suppressed", "dead_letter": f"{prefix}.sends.dead-letter",
            "preferences": f"{prefix}.preferences.changed", "rejected": f"{prefix}.preferences.rejected",
            "partitions": partitions, "preference_partitions": partitions,
        }
    )
    common = {
        "topics": topics,
        "state": base.state.model_copy(update={"key_prefix": f"sg{prefix}"}),
        "preferences": base.preferences.model_copy(update={"group_id": f"{prefix}-prefs"}),
        "http": base.http.model_copy(update={"enabled": False}),
    }
    main = base.model_copy(update={**common, "gate": base.gate.model_copy(update={"group_id": f"{prefix}-gate", "instance_id": f"{prefix}-gate"})})
    baseline = main.model_copy(
        update={
            "topics": topics.model_copy(update={"allowed": f"{prefix}.baseline.out"}),
            "gate": main.gate.model_copy(update={"group_id": f"{prefix}-baseline", "instance_id": f"{prefix}-baseline"}),
        }
    )
    latency = main.model_copy(
        update={
            "topics": topics.model_copy(
                update={name: f"{prefix}.latency.{name.replace('_', '-')}" for name in ("requested", "allowed", "suppressed", "dead_letter")}
            ),
            "gate": main.gate.model_copy(update={"group_id": f"{prefix}-latency-gate", "instance_id": f"{prefix}-latency"}),
        }
    )
    return BenchSettings(prefix, main, baseline, latency)


class BenchRun:
    """One bench run: named stages in order, each adding its section to :attr:`results`."""

    def __init__(
        self, base: Settings, config: BenchConfig, *, console: Console | None = None, profile_gate: Path | None = None
    ) -> None:
        self.config = config
        self._profile_gate = profile_gate
        self.names = bench_settings(base, run_id=uuid.uuid4().hex[:8], partitions=config.partitions)
        self.console = console
        self.results: dict[str, Any] = {"version": 1, "config": dataclasses.asdict(config), "stages": {}}
        self._plan = BenchPlan(
            seed=config.seed, orgs=config.orgs, opt_outs=config.opt_outs, contact_facts=config.contact_facts,
            sms_opt_ins=config.sms_opt_ins, clean_contacts=config.clean_contacts, suppressed_share=config.suppressed_share,
        )
        settings = self.names.main
        self._codec: AvroCodec | None = None  # made on first use: with a registry, making it is I/O
        # Scanning and MEMORY USAGE over a million facts take longer than the workers' timeout.
        self._redis = redis.Redis.from_url(settings.redis.url, **{**settings.redis.client_kwargs(), "socket_timeout": 60})

    @property
    def codec(self) -> AvroCodec:
        if self._codec is None:
            self._codec = AvroCodec.from_settings(self.names.main)
        return self._codec

    def run(self) -> dict[str, Any]:
        """Run every stage; topics, Redis keys and consumer groups are removed whatever happens."""
        started = time.monotonic()
        self.results["started_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.results["machine"] = machine_info(self._redis, self.names.main)
        stages: list[tuple[str, Callable[[], None]]] = [
            ("setup", self._setup),
            ("preload", self._preload),
            ("rebuild", self._rebuild),
            ("sends", self._produce_sends),
            ("baseline", self._baseline),
            ("gate", self._gate),
            ("latency", self._latency),
        ]
        try:
            for name, stage in stages:
                stage_started = time.monotonic()
                logger.info("bench stage", extra={"stage": name})
                stage()
                self.results["stages"][name] = round(time.monotonic() - stage_started, 2)
        finally:
            self._teardown()
            self._redis.close()
        self.results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        self.results["duration_seconds"] = round(time.monotonic() - started, 1)
        self.results["targets"] = check_targets(self.results, self.names.main)
        return self.results

    # -- stages ------------------------------------------------------------------
    def _setup(self) -> None:
        self.results["prefix"] = self.names.prefix
        for settings in (self.names.main, self.names.baseline, self.names.latency):
            create_topics(settings)

    def _preload(self) -> None:
        plan = self._plan
        expected = len(plan.world.organizations) + int(plan.opt_outs * 1.1) + plan.contact_facts + plan.sms_opt_ins
        with progress_bar(self.console) as progress:
            report = produce_events(
                self.names.main, plan.events(base_time_ms=_now_ms() - 86_400_000), codec=self.codec,
                producer=bulk_producer(self.names.main), on_progress=tracked(progress, "preference events", expected),
            )
        self.results["preload"] = {
            "events": report.records, "seconds": round(report.seconds, 2),
            "events_per_second": round(report.records_per_second), "megabytes": round(report.bytes / 1e6, 1),
            "by_type": dict(sorted(report.kinds.items())),
        }

    def _rebuild(self) -> None:
        from worker.ops.rebuild import rebuild

        before = int(self._redis.info("memory")["used_memory"])
        result = rebuild(self.names.main, console=self.console)
        after = int(self._redis.info("memory")["used_memory"])
        facts, key_bytes, keys = count_facts(self._redis, self.names.main)
        self.results["rebuild"] = {
            "events": result.events_applied + result.events_rejected,
            "applied": result.events_applied,
            "rejected": result.events_rejected,
            "seconds": round(result.seconds, 2),
            "events_per_second": round(result.events_per_second),
            "facts": facts,
            "hashes": keys,
            "used_memory_before": before,
            "used_memory_after": after,
            "bytes_per_fact": round((after - before) / facts, 1) if facts else None,
            "memory_usage_bytes_per_fact": round(key_bytes / facts, 1) if facts else None,
        }

    def _produce_sends(self) -> None:
        count = self.config.sends
        with progress_bar(self.console) as progress:
            report = produce_sends(
                self.names.main, self._plan.sends(count, base_time_ms=_now_ms()), codec=self.codec,
                producer=bulk_producer(self.names.main), on_progress=tracked(progress, "send requests", count),
            )
        self.results["sends"] = {
            "records": report.records, "seconds": round(report.seconds, 2),
            "records_per_second": round(report.records_per_second), "megabytes": round(report.bytes / 1e6, 1),
            "by_kind": dict(sorted(report.kinds.items())),
        }

    def _baseline(self) -> None:
        settings = self.names.baseline
        loop = BareTransactionalLoop(
            settings=settings, input_topic=settings.topics.requested, output_topic=settings.topics.allowed,
            group_id=settings.gate.group_id,
        )
        result = loop.run(max_messages=self.config.sends)
        if result.records < self.config.sends:
            raise BenchFailed(f"baseline: moved {result.records} of {self.config.sends} records before its timeout")
        self.results["baseline"] = {
            "records": result.records, "seconds": round(result.seconds, 3),
            "records_per_second": round(result.records_per_second), "batches": result.batches,
            "transactions": result.transactions,
        }

    def _gate(self) -> None:
        self.results["gate"] = measure_gate(
            self.names.main, self.config.sends, self._redis, console=self.console, profile=self._profile_gate
        )
        baseline = self.results["baseline"]["records_per_second"]
        self.results["ratio"] = round(self.results["gate"]["records_per_second"] / baseline, 3) if baseline else None

    def _latency(self) -> None:
        rate = self.config.latency_rate or max(50.0, round(self.results["gate"]["records_per_second"] * 0.5, -1))
        self.results["latency"] = measure_latency(
            self.names.latency, self._plan, self.codec, rate=rate, seconds=self.config.latency_seconds,
            first_index=self.config.sends, console=self.console,
        )

    def _teardown(self) -> None:
        main = self.names.main
        try:
            delete_topics(main, self.names.topics())
        except SendgateError as exc:
            logger.warning("bench topics not deleted", extra={"error": str(exc)})
        from worker.state.redis_store import RedisStateStore

        store = RedisStateStore.from_settings(main.redis, main.state)
        try:
            store.clear()
        except redis.RedisError as exc:
            logger.warning("bench Redis keys not deleted", extra={"error": str(exc)})
        finally:
            store.close()
        admin = AdminClient(main.kafka.common_config())
        for future in admin.delete_consumer_groups(self.names.groups(), request_timeout=10).values():
            try:
                future.result()
            except KafkaException:
                pass  # a group that never committed does not exist: nothing to delete


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- latency at a fixed offered load -------------------------------------------------
def gate_process(settings: Settings, results: Any) -> None:
    """A gate in its own process (spawned): stops on SIGTERM, reports its progress on ``results``."""
    from worker import logs
    from worker.assembly import Runtime, build_gate

    logs.configure(settings.log)  # as the parent command does: same structured lines
    runtime = Runtime.create(settings)
    runtime.stop.install_signal_handlers()
    try:
        progress = build_gate(runtime).run()
        results.put({"progress": dataclasses.asdict(progress)})
    except BaseException as exc:
        results.put({"error": f"{type(exc).__name__}: {exc}"})


class LatencyProbe:
    """Reads the gate's outputs under read_committed and keeps, per measured request, now − its send time.

    Send times are taken by the producing loop (:meth:`stamped`) and looked up
    by message key, so while the clock runs neither side encodes or decodes
    Avro: on a 2-core box that work would be taken from the gate it measures.
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
        while not self._stop.is_set():
            # A short wait: the clock is read when consume() returns, so its wait would be measured too.
            messages = self._consumer.consume(1000, 0.005)
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
                    self.latencies_ms.append((now - sent) * 1000)


def measure_latency(
    settings: Settings, plan: BenchPlan, codec: AvroCodec, *, rate: float, seconds: float, first_index: int,
    console: Console | None,
) -> dict[str, Any]:
    """End-to-end latency through a gate process at ``rate`` requests/s for ``seconds``."""
    context = multiprocessing.get_context("spawn")  # librdkafka threads do not survive fork
    results = context.Queue()
    child = context.Process(target=gate_process, args=(settings, results), name="sendgate-bench-gate", daemon=True)
    probe = LatencyProbe(settings, measured_prefix=b"lat-")
    producer = Producer(idempotent_producer_config(settings))  # a campaign engine's producer, not the bulk one
    count = max(1, int(rate * seconds))
    topic = settings.topics.requested
    # Encoded before the clock runs; requested_at is then the encoding time, which the probe does not use.
    report = ProduceReport(topic)
    measured = list(encoded_sends(plan.sends(count, base_time_ms=_now_ms(), start=first_index, id_prefix="lat"), codec, report.kinds))
    child.start()
    probe.start()
    try:
        # Warm-up: the gate process is up, assigned and deciding before the clock runs.
        produce_sends(settings, plan.sends(WARM_UP_RECORDS, base_time_ms=_now_ms(), start=first_index + count, id_prefix="warm"),
                      codec=codec, producer=producer, stamp_now=True)
        if not probe.wait_for(WARM_UP_RECORDS, timeout=120, alive=child.is_alive):
            raise BenchFailed(f"latency: the gate process decided {probe.seen} of {WARM_UP_RECORDS} warm-up requests "
                              f"(exit code {child.exitcode})")
        with progress_bar(console) as progress:
            produce_encoded(
                producer, topic, probe.stamped(measured), report, rate=rate,
                on_progress=tracked(progress, f"paced at {rate:,.0f}/s", count),
            )
        if not probe.wait_for(WARM_UP_RECORDS + count, timeout=60, alive=child.is_alive):
            raise BenchFailed(f"latency: {probe.seen - WARM_UP_RECORDS} of {count} requests visible after 60s")
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
        "records": len(latencies),
        "p50_ms": _percentile(latencies, 0.50),
        "p90_ms": _percentile(latencies, 0.90),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "commit_interval_ms": round(settings.gate.commit_interval_seconds * 1000),
        "gate_process": outcome,
        # Batches near batch_max_messages mean the gate process fell behind the
        # offered load: the percentiles then measure its queue, not its commit cadence.
        "gate_mean_batch": round(mean_batch, 1) if mean_batch else None,
    }


def _percentile(ordered: list[int], q: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


# -- facts, machine, targets -------------------------------------------------------
def count_facts(client: redis.Redis, settings: Settings) -> tuple[int, int, int]:
    """(facts, bytes by MEMORY USAGE, hashes) of the store of ``settings``, metadata excluded."""
    from worker.state.addressing import FactAddressing

    addressing = FactAddressing(settings.state)
    meta = addressing.meta_key.encode()
    facts = memory = hashes = 0
    keys = [key for key in client.scan_iter(match=addressing.key_pattern(), count=1000) if key != meta]
    for start in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 1000]:
            pipe.hlen(key)
            pipe.memory_usage(key, samples=0)
        replies = pipe.execute()
        facts += sum(replies[0::2])
        memory += sum(replies[1::2])
        hashes += len(replies) // 2
    return facts, memory, hashes


def machine_info(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "redis": client.info("server").get("redis_version"),
        "kafka": _kafka_version(settings),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def _kafka_version(settings: Settings) -> str:
    """The broker version when it is the local stack (its jars name it); the admin API does not tell."""
    if not settings.kafka.bootstrap_servers.startswith(("127.0.0.1:", "localhost:")):
        return "unknown"
    state = Path(os.environ.get("SENDGATE_STACK_DIR", Path(__file__).resolve().parents[2] / "deploy" / "local" / ".state"))
    jars = sorted((state / "lib").glob("kafka-server-[0-9]*.jar"))
    return jars[-1].stem.removeprefix("kafka-server-") + " (local stack)" if jars else "unknown"


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


# -- report ------------------------------------------------------------------------
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
        ("baseline (bare transactional loop)", f"{baseline.get('records_per_second', 0):,} records/s"),
        ("gate", f"{gate.get('records_per_second', 0):,} records/s ({gate.get('suppressed_share', 0):.1%} suppressed)"),
        ("gate / baseline", f"{results.get('ratio')}"),
        ("state round trips per batch", f"{gate.get('round_trips_per_batch')} (EVALSHA: {gate.get('evalsha_per_batch')}, "
         f"{gate.get('mean_batch')} records/batch)"),
        (f"end-to-end at {latency.get('offered_rate', 0):,.0f}/s: p50 / p99",
         f"{latency.get('p50_ms')} / {latency.get('p99_ms')} ms (commit every {latency.get('commit_interval_ms')} ms)"),
        ("rebuild", f"{rebuild.get('events_per_second', 0):,} events/s ({rebuild.get('events', 0):,} events)"),
        ("Redis memory per fact", f"{rebuild.get('bytes_per_fact')} B (MEMORY USAGE: {rebuild.get('memory_usage_bytes_per_fact')} B, "
         f"{rebuild.get('facts', 0):,} facts)"),
    ]
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


def default_output() -> Path:
    return Path("bench-results") / f"bench-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"


# -- the command -------------------------------------------------------------------
@click.command("bench")
@click.option("--quick", is_flag=True, help="Small sizes, seconds long (smoke test, CI).")
@click.option("--sends", type=click.IntRange(min=1), default=None, help="Send requests through baseline and gate [500,000].")
@click.option("--opt-outs", type=click.IntRange(min=0), default=None, help="Opt-out events in the store [1,000,000].")
@click.option("--contact-facts", type=click.IntRange(min=0), default=None, help="Contact facts in the store [100,000].")
@click.option("--sms-opt-ins", type=click.IntRange(min=0), default=None, help="SMS opt-ins (allowed SMS) [100,000].")
@click.option("--clean-contacts", type=click.IntRange(min=1), default=None, help="Contacts without facts [250,000].")
@click.option("--orgs", type=click.IntRange(min=1), default=None, help="Organizations [50].")
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="Partitions of the bench topics [6].")
@click.option("--latency-seconds", type=click.FloatRange(min=0.5), default=None, help="Length of the paced run [20].")
@click.option("--latency-rate", type=click.FloatRange(min=1), default=None, help="Offered load, requests/s [half the gate's].")
@click.option("--seed", type=int, default=None, help="Seed of the generated world [1].")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON results [bench-results/bench-<timestamp>.json].")
@click.option("--profile-gate", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Profile the gate run with pyinstrument (pip install pyinstrument) into this text file.")
@click.pass_obj
def bench_command(settings: Settings, /, quick: bool, output: Path | None, profile_gate: Path | None, **sizes: Any) -> None:
    """Measure the gate against the bare transactional loop, its latency, the rebuild and Redis memory."""

    config = dataclasses.replace(QUICK if quick else BenchConfig(), **{k: v for k, v in sizes.items() if v is not None})
    contacts = config.opt_outs + config.contact_facts + config.sms_opt_ins + config.clean_contacts
    if contacts < config.orgs:
        raise click.BadParameter(f"{contacts} contacts cannot fill {config.orgs} organizations", param_hint="--orgs")
    if profile_gate is not None and importlib.util.find_spec("pyinstrument") is None:
        raise click.BadParameter("needs pyinstrument: pip install pyinstrument", param_hint="--profile-gate")
    path = output or default_output()

    def body() -> None:
        run = BenchRun(settings, config, console=console, profile_gate=profile_gate)
        try:
            run.run()
        except BaseException as exc:
            run.results["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(run.results, indent=2, default=str) + "\n")
        render(console, run.results)
        console.print(f"results: {path}")

    run_guarded(body)
