"""SPEC §6 on a Redis Cluster under its own faults, with two gates and two appliers in one group.

Each row runs on a private 3 masters + 3 replicas cluster: a master SIGKILLed
under traffic while its replica is promoted (asynchronous replication: the
promoted replica may hold an older shard, which the applier re-applies from
its own progress); a slot migration (``redis-cli --cluster reshard``) under
traffic; one shard's keys deleted at once (a shard that came back empty);
an applier SIGKILLed while the other takes its partitions. Every row: 0 lost,
0 duplicated, 0 wrongly allowed, and the pause until decisions resume. The
shard-deleted row has a short version in ``make test``.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.chaos import report
from tests.chaos.faults import Measured, finish, gate_instances
from tests.chaos.run import ChaosRun, chaos_run, with_services
from tests.chaos.workload import TrafficThreads
from tests.redis_cluster import RedisCluster, redis_cluster
from worker.config import Settings
from worker.state.addressing import FactAddressing

RESUME_BOUND_SECONDS = 90.0
SHARD_REBUILT = "state shards are empty"  # the applier noticed the lost shard and re-applies it


def on_cluster(settings: Settings, cluster: RedisCluster) -> Settings:
    # Short timeouts: a dead node is noticed in half a second.
    return with_services(
        settings, redis_url=cluster.url, partitions=6, cluster=True, socket_timeout_seconds=0.5, connect_timeout_seconds=0.5
    )


@contextlib.contextmanager
def private_cluster(directory: Path) -> Iterator[RedisCluster]:
    """A cluster of this test's own (faults are injected into it), whatever SENDGATE_TEST_REDIS_CLUSTER says."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SENDGATE_TEST_REDIS_CLUSTER", raising=False)
        with redis_cluster(directory) as cluster:
            yield cluster


def slot_owner(cluster: RedisCluster, key: str) -> int:
    """The port of the master serving ``key``'s slot."""
    with contextlib.closing(redis.Redis(host="127.0.0.1", port=cluster.running_ports()[0], socket_timeout=5)) as client:
        slot = int(client.cluster("keyslot", key))
        for start, end, master, *_ in client.cluster("slots"):
            if start <= slot <= end:
                return int(master[1])
    raise AssertionError(f"no master serves slot {slot}")


def node_id(cluster: RedisCluster, port: int) -> str:
    with contextlib.closing(redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)) as client:
        raw = client.cluster("myid")
        return raw.decode() if isinstance(raw, bytes) else str(raw)


def run_cluster_fault(
    run: ChaosRun,
    fault: Callable[[ChaosRun], str],
    *,
    records: int,
    sends_per_second: float,
    warmup_seconds: float = 3.0,
    expect_log: str | None = None,
) -> tuple[object, Measured, float, str]:
    """Traffic through two gates and two appliers; ``fault`` strikes once; everything must come out right."""
    measured = Measured()
    run.setup_preferences()
    for i in range(2):
        run.workers.applier(name=f"applier-{i}")
    for instance in gate_instances(run, 2):
        run.workers.gate(instance)
    with run.monitor() as monitor:
        threads = TrafficThreads(
            run.settings, run.codec, run.traffic, sends=records, sends_per_second=sends_per_second, events_per_second=20
        ).start()
        monitor.wait_deciding()
        time.sleep(warmup_seconds)
        run.workers.assert_running()
        moment = time.monotonic()
        note = fault(run)
        resumed = monitor.resumed_after(moment, timeout=RESUME_BOUND_SECONDS)
        measured.pauses.append(resumed)
        threads.join(timeout=records / sends_per_second * 3 + 120)
        monitor.wait_caught_up(len(run.ledger.sends), timeout=300)
        measured.longest_stall = monitor.longest_stall(since=moment)
    finish(run, measured)
    if expect_log is not None:
        assert expect_log in run.workers.logs(), f"no worker logged {expect_log!r}"
    return run.check(), measured, resumed, note


def fill(row: report.Row, verdict, measured: Measured, resumed: float, note: str) -> None:  # type: ignore[no-untyped-def]
    row.fill([verdict], pause=f"resumed {resumed:.1f} s after; longest stall {measured.longest_stall:.1f} s", note=note)
    assert verdict.clean, verdict.describe()


def delete_one_shard(cluster: RedisCluster, shard: int) -> Callable[[ChaosRun], str]:
    """Every key of ``shard`` (meta and facts) deleted in one DEL on its node: the shard came back empty."""

    def strike(run: ChaosRun) -> str:
        meta = FactAddressing(run.settings.state).meta_keys[shard]
        port = slot_owner(cluster, meta)
        with contextlib.closing(redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)) as node:
            slot = int(node.cluster("keyslot", meta))
            keys = node.cluster("getkeysinslot", slot, 1_000_000)
            deleted = node.delete(*keys) if keys else 0
        return f"shard {shard}: {deleted} keys deleted at once (node {port})"

    return strike


def test_one_shards_keys_deleted_under_traffic_are_reapplied_and_nothing_is_wrongly_allowed(settings, tmp_path):
    with report.fault("Redis Cluster: one shard's keys deleted (short)") as row:
        with private_cluster(tmp_path / "cluster") as cluster, chaos_run(
            on_cluster(settings, cluster), tmp_path / "logs", audience_size=1000
        ) as run:
            verdict, measured, resumed, note = run_cluster_fault(
                run, delete_one_shard(cluster, 5), records=3000, sends_per_second=300, expect_log=SHARD_REBUILT
            )
        fill(row, verdict, measured, resumed, note)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_cluster_master_killed_and_replica_promoted(settings, tmp_path):
    with report.fault("Redis Cluster: master SIGKILLed, replica promoted") as row:
        with private_cluster(tmp_path / "cluster") as cluster, chaos_run(
            on_cluster(settings, cluster), tmp_path / "logs", audience_size=2000
        ) as run:

            def strike(run: ChaosRun) -> str:
                # Not the node the clients were given as their URL: they learn the others from it.
                victim = next(port for port in cluster.masters_by_port() if port != cluster.ports[0])
                killed_at = time.monotonic()
                cluster.kill(victim)
                deadline = killed_at + 60
                while len(cluster.masters_by_port()) < 3:  # until a replica took over its slots
                    assert time.monotonic() < deadline, "no replica promoted within 60 s"
                    time.sleep(0.1)
                cluster.wait_ok(timeout=60)
                promoted = time.monotonic() - killed_at
                cluster.start_node(victim)  # back as a replica of the promoted one
                return f"master {victim} killed; replica promoted after {promoted:.1f} s"

            verdict, measured, resumed, note = run_cluster_fault(run, strike, records=12_000, sends_per_second=400)
        fill(row, verdict, measured, resumed, note)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_cluster_slots_resharded_under_traffic(settings, tmp_path):
    with report.fault("Redis Cluster: 4000 slots resharded under traffic") as row:
        with private_cluster(tmp_path / "cluster") as cluster, chaos_run(
            on_cluster(settings, cluster), tmp_path / "logs", audience_size=2000
        ) as run:

            def strike(run: ChaosRun) -> str:
                source, target = list(cluster.masters_by_port())[:2]
                started = time.monotonic()
                moved = subprocess.run(
                    ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}",
                     "--cluster-from", node_id(cluster, source), "--cluster-to", node_id(cluster, target),
                     "--cluster-slots", "4000", "--cluster-yes", "--cluster-pipeline", "100"],
                    capture_output=True, text=True, timeout=600, check=False,
                )
                assert moved.returncode == 0, f"reshard failed:\n{moved.stdout[-2000:]}{moved.stderr[-2000:]}"
                return f"4000 slots {source} -> {target} in {time.monotonic() - started:.1f} s"

            verdict, measured, resumed, note = run_cluster_fault(run, strike, records=12_000, sends_per_second=400)
        fill(row, verdict, measured, resumed, note)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_cluster_one_shard_deleted(settings, tmp_path):
    with report.fault("Redis Cluster: one shard's keys deleted") as row:
        with private_cluster(tmp_path / "cluster") as cluster, chaos_run(
            on_cluster(settings, cluster), tmp_path / "logs", audience_size=2000
        ) as run:
            verdict, measured, resumed, note = run_cluster_fault(
                run, delete_one_shard(cluster, 11), records=12_000, sends_per_second=400, warmup_seconds=8,
                expect_log=SHARD_REBUILT,
            )
        fill(row, verdict, measured, resumed, note)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_cluster_applier_killed_while_the_other_takes_its_partitions(settings, tmp_path):
    with report.fault("Redis Cluster: an applier SIGKILLed, the other takes over") as row:
        with private_cluster(tmp_path / "cluster") as cluster, chaos_run(
            on_cluster(settings, cluster), tmp_path / "logs", audience_size=2000
        ) as run:

            def strike(run: ChaosRun) -> str:
                victim = next(w for w in run.workers.all if w.name == "applier-0")
                victim.kill()
                return "applier-0 SIGKILLed, not restarted"

            verdict, measured, resumed, note = run_cluster_fault(run, strike, records=12_000, sends_per_second=400)
        fill(row, verdict, measured, resumed, note)
