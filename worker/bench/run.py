"""One bench run: its stages in order, on topics and a Redis key prefix of its own (created, then deleted).

1. ``preload``  — the bench's preference topic (:class:`~worker.bench.plan.BenchPlan`): opt-outs and contact facts;
2. ``rebuild``  — :func:`worker.ops.rebuild.rebuild` applies it into an empty store: events/s, Redis bytes per fact;
3. ``sends``    — the send requests, about a fifth of them to be suppressed;
4. ``baseline`` — the bare transactional loop over them (:mod:`worker.bench.baseline`), and
5. ``gate``     — the real gate over the same records: records/s, state round trips per batch, time per phase;
   the two alternate, each run long enough to be steady (:mod:`worker.bench.throughput`);
6. ``cluster``  — only with a cluster URL (``--also-cluster``): the same preference topic applied into the
   store on that Redis Cluster, then the gate's rounds again on the same sends against it (the ``cluster`` section);
7. ``latency``  — a gate process at a fixed offered load below saturation (half the gate's rate,
   :mod:`worker.bench.latency`): from produce to visible under read_committed, p50/p99.

The rebuild and latency stages run on the configured Redis only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import platform
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from rich.console import Console

from worker.bench.config import BenchConfig, bench_settings, now_ms
from worker.bench.latency import measure_latency
from worker.bench.plan import BenchPlan
from worker.bench.report import check_targets
from worker.bench.throughput import ThroughputComparison
from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import SendgateError
from worker.kafka.admin import create_topics, delete_topics
from worker.loadgen.producing import bulk_producer, produce_events, produce_sends
from worker.loadgen.progress import progress_bar, tracked
from worker.state.connection import StateClient, connect, per_primary_info, used_memory

logger = logging.getLogger(__name__)


class BenchRun:
    """One bench run: named stages in order, each adding its section to :attr:`results`."""

    def __init__(
        self, base: Settings, config: BenchConfig, *, console: Console | None = None, profile_gate: Path | None = None,
        cluster_url: str | None = None,
    ) -> None:
        self.config = config
        self._cluster_url = cluster_url
        self._comparison: ThroughputComparison | None = None
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
        self._groups: list[str] = []  # consumer groups made by the throughput runs, deleted at teardown
        # Scanning and MEMORY USAGE over a million facts take longer than the workers' timeout.
        self._redis = connect(settings.redis.model_copy(update={"socket_timeout_seconds": 60.0}))

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
        # A stage that interleaves two (baseline and gate) returns the seconds of each.
        stages: list[tuple[str, Callable[[], dict[str, float] | None]]] = [
            ("setup", self._setup),
            ("preload", self._preload),
            ("rebuild", self._rebuild),
            ("sends", self._produce_sends),
            ("baseline and gate", self._throughput),
            *([("cluster", self._cluster)] if self._cluster_url else []),
            ("latency", self._latency),
        ]
        try:
            for name, stage in stages:
                stage_started = time.monotonic()
                logger.info("bench stage", extra={"stage": name})
                parts = stage()
                for part, seconds in (parts or {name: time.monotonic() - stage_started}).items():
                    self.results["stages"][part] = round(seconds, 2)
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
                self.names.main, plan.events(base_time_ms=now_ms() - 86_400_000), codec=self.codec,
                producer=bulk_producer(self.names.main), on_progress=tracked(progress, "preference events", expected),
            )
        self.results["preload"] = {
            "events": report.records, "seconds": round(report.seconds, 2),
            "events_per_second": round(report.records_per_second), "megabytes": round(report.bytes / 1e6, 1),
            "by_type": dict(sorted(report.kinds.items())),
        }

    def _rebuild(self) -> None:
        from worker.ops.rebuild import rebuild

        before = used_memory(self._redis)
        result = rebuild(self.names.main, console=self.console)
        after = used_memory(self._redis)
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
                self.names.main, self._plan.sends(count, base_time_ms=now_ms()), codec=self.codec,
                producer=bulk_producer(self.names.main), on_progress=tracked(progress, "send requests", count),
            )
        self.results["sends"] = {
            "records": report.records, "seconds": round(report.seconds, 2),
            "records_per_second": round(report.records_per_second), "megabytes": round(report.bytes / 1e6, 1),
            "by_kind": dict(sorted(report.kinds.items())),
        }

    def _throughput(self) -> dict[str, float]:
        comparison = ThroughputComparison(self.names, self.config, self._redis, console=self.console, profile=self._profile_gate)
        self._comparison = comparison
        try:
            self.results.update(comparison.run())
        finally:
            self._groups.extend(comparison.groups)
        return comparison.stage_seconds

    def _cluster_settings(self) -> Settings:
        main = self.names.main
        return main.model_copy(update={
            "redis": main.redis.model_copy(update={"url": self._cluster_url, "cluster": True}),
            "preferences": main.preferences.model_copy(update={"group_id": f"{self.names.prefix}-cluster-prefs"}),
        })

    def _cluster(self) -> dict[str, float]:
        """The store rebuilt on the cluster from the same preference topic, then the gate's rounds against it."""
        from redis.cluster import RedisCluster

        from worker.ops.rebuild import rebuild

        assert self._comparison is not None  # the throughput stage ran first
        settings = self._cluster_settings()
        self._groups.append(settings.preferences.group_id)
        started = time.monotonic()
        result = rebuild(settings, console=self.console)
        prepared = time.monotonic() - started
        client = connect(settings.redis.model_copy(update={"socket_timeout_seconds": 60.0}))
        assert isinstance(client, RedisCluster)
        known = len(self._comparison.groups)  # the standalone runs' groups are in self._groups already
        try:
            before = self._comparison.stage_seconds.get("cluster-gate", 0.0)
            section = {
                "url": self._cluster_url,
                "redis": per_primary_info(client, "server")[0].get("redis_version"),
                "shards": settings.state.shards,
                "prepared": {"events": result.events_applied + result.events_rejected, "applied": result.events_applied,
                             "seconds": round(result.seconds, 2)},
                **self._comparison.run_cluster(settings, client),
            }
        finally:
            self._groups.extend(self._comparison.groups[known:])
            client.close()
        standalone = self.results["gate"]["records_per_second"]
        section["to_standalone_gate"] = round(section["records_per_second"] / standalone, 3) if standalone else None
        self.results["cluster"] = section
        return {"cluster prepare": prepared, "cluster gate": self._comparison.stage_seconds["cluster-gate"] - before}

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
        _clear_store(main, "bench Redis keys not deleted")
        if self._cluster_url:
            _clear_store(self._cluster_settings(), "bench keys on the cluster not deleted")
        admin = AdminClient(main.kafka.common_config())
        for future in admin.delete_consumer_groups([*self.names.groups(), *self._groups], request_timeout=10).values():
            with contextlib.suppress(KafkaException):  # a group that never committed does not exist: nothing to delete
                future.result()


def count_facts(client: StateClient, settings: Settings) -> tuple[int, int, int]:
    """(facts, bytes by MEMORY USAGE, hashes) of the store of ``settings``, metadata excluded."""
    from worker.state.addressing import FactAddressing

    addressing = FactAddressing(settings.state)
    metas = {key.encode() for key in addressing.meta_keys}
    facts = memory = hashes = 0
    keys = [key for key in client.scan_iter(match=addressing.key_pattern(), count=1000) if key not in metas]
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


def machine_info(client: StateClient, settings: Settings) -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "redis": per_primary_info(client, "server")[0].get("redis_version"),
        "redis_primaries": len(per_primary_info(client, "server")),
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


def _clear_store(settings: Settings, failure: str) -> None:
    """Delete the bench's store; a Redis that cannot be reached is logged with ``failure``, not raised."""
    from worker.state.redis_store import RedisStateStore

    store = RedisStateStore.from_settings(settings.redis, settings.state)
    try:
        store.clear()
    except redis.RedisError as exc:
        logger.warning(failure, extra={"error": str(exc)})
    finally:
        store.close()
