"""Gate and appliers on a real Redis Cluster (3 masters + 3 replicas): every guarantee holds.

Two ``sendgate preferences`` in one consumer group split the partitions of
``preferences.changed`` and each advances only its own partitions' progress
in every shard; two gates decide on the sharded store. Checked by the chaos
checker: every send exactly once, nothing wrongly allowed or suppressed.
"""

from __future__ import annotations

import re

from tests.chaos.faults import Measured, finish, gate_instances
from tests.chaos.run import chaos_run, with_services
from tests.chaos.workload import TrafficThreads
from tests.redis_cluster import RedisCluster
from worker.config import Settings
from worker.state.addressing import FactAddressing
from worker.state.connection import connect

SENDS = 3000
SENDS_PER_SECOND = 300


def on_cluster(settings: Settings, cluster: RedisCluster) -> Settings:
    # Short timeouts: a misbehaving node must not stretch the test.
    return with_services(
        settings, redis_url=cluster.url, partitions=6, cluster=True, socket_timeout_seconds=2.0, connect_timeout_seconds=2.0
    )


def test_gates_and_two_appliers_on_a_cluster_decide_every_send_once_and_allow_nothing_wrongly(
    settings, redis_cluster_service, tmp_path
):
    cluster_settings = on_cluster(settings, redis_cluster_service)
    with chaos_run(cluster_settings, tmp_path / "logs", audience_size=1000) as run:
        run.setup_preferences()
        appliers = [run.workers.applier(name=f"applier-{i}") for i in range(2)]
        for instance in gate_instances(run, 2):
            run.workers.gate(instance)
        measured = Measured()
        with run.monitor() as monitor:
            threads = TrafficThreads(
                run.settings, run.codec, run.traffic, sends=SENDS, sends_per_second=SENDS_PER_SECOND, events_per_second=30
            ).start()
            monitor.wait_deciding()
            threads.join(timeout=SENDS / SENDS_PER_SECOND * 3 + 120)
            monitor.wait_caught_up(len(run.ledger.sends), timeout=300)
        run.workers.assert_running()
        client = connect(cluster_settings.redis)
        try:
            metas = [client.hgetall(key) for key in FactAddressing(cluster_settings.state).meta_keys]
        finally:
            client.close()
        finish(run, measured)
        verdict = run.check()
        assigned = [re.findall(r'"partitions": \{[^}]+\}', applier.logs()) for applier in appliers]
    assert verdict.clean, verdict.describe()
    assert all(assigned), "both appliers of the group were assigned partitions"
    # Every shard got progress for every partition, whichever applier owns it.
    assert all(meta[b"ready"] == b"1" for meta in metas)
    assert all({f"p:{p}".encode() for p in range(6)} <= set(meta) for meta in metas)
