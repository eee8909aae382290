"""SPEC §6.1 and availability through broker restarts, on a Kafka of our own (the shared stack is never restarted).

No supervisor: a worker that exits fails the row (it used to exit 11 after a
restart and rely on being restarted; it now rebuilds its dead Kafka clients
in-process, worker/kafka/recovery.py). Traffic is paced and lasts until the
last restart is over, so every restart lands with records in flight however
fast the gates are. Each row counts lost, duplicated and wrongly allowed
records, worker exits, and the longest pause of any partition after the
broker answered again.

Short version in `make test`: three restarts of a single-node private Kafka.
`make chaos`: twenty restarts of it, and a rolling restart of a three-node
KRaft cluster (replication factor 3, min ISR 2).
"""

from __future__ import annotations

import time

import pytest

from tests.chaos import report
from tests.chaos.faults import Measured, run_broker_faults
from tests.chaos.instances import kraft_cluster, shared_private_stack
from tests.chaos.resume import summary
from tests.chaos.run import chaos_run, with_services

# An availability bound, not a speed test: from "the broker answers again" to
# "every partition decided a record again". Measured well below it (see README).
RESUME_BOUND_SECONDS = 15.0
# While the run goes on, only a partition that never moves again stops it early;
# the pauses themselves are read from the outputs afterwards and held to the bound.
STUCK_SECONDS = 60.0


@pytest.fixture(scope="session")
def private_kafka(tmp_path_factory):  # type: ignore[no-untyped-def]
    with shared_private_stack(tmp_path_factory.mktemp("private-kafka")) as stack:
        yield stack


def fill_row(row: report.Row, verdict, measured: Measured, faults: int) -> None:  # type: ignore[no-untyped-def]
    row.fill(
        [verdict],
        exits=len(measured.worker_exits),
        pause=f"pause after the broker was back: {summary(measured.pauses)}"
        + (f"; after its group coordinator answered: {summary(measured.coordinator_pauses)}" if measured.coordinator_pauses else ""),
        note=f"{measured.effective_faults}/{faults} restarts with records in flight; "
        + "; ".join(measured.notes[-3:] if len(measured.notes) > 6 else measured.notes)
        + f"; every partition resumed after {[round(p, 1) for p in measured.pauses]} s"
        + f"; first decision after {[round(r.first, 1) for r in measured.resumes]} s"
        + f"; slowest partition {[r.slowest_partition for r in measured.resumes]}"
        + f"; offsets monitor saw {[round(p, 1) for p in measured.monitor_pauses]} s"
        + f"; group coordinator answered {[round(w, 1) for w in measured.coordinator_waits]} s after metadata"
        + f"; every partition resumed {[round(p, 1) for p in measured.coordinator_pauses]} s after that",
    )
    print(f"\n{report.render([row])}")  # shown with -s (make chaos prints every row at the end)


def assert_row(verdict, measured: Measured, faults: int) -> None:  # type: ignore[no-untyped-def]
    assert measured.worker_exits == [], f"workers exited (no supervisor here): {measured.worker_exits}"
    assert verdict.clean, verdict.describe()
    assert measured.effective_faults == faults, "a restart landed with no records in flight: it proves nothing"
    assert max(measured.pauses) < RESUME_BOUND_SECONDS, measured.pauses


@pytest.mark.timeout(600)
def test_workers_stay_up_through_three_broker_restarts_without_losing_or_doubling(settings, private_kafka, tmp_path):
    settings = with_services(settings, bootstrap=private_kafka.bootstrap, redis_url=private_kafka.redis_url, partitions=6)
    restarts = 3
    with report.fault(f"broker restart x{restarts}, single node, no supervisor (short)") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=1000) as run:
            verdict, measured = run_broker_faults(
                run, gates=2, sends_per_second=300, faults=[private_kafka.restart_kafka] * restarts,
                settle_seconds=3, resume_bound=STUCK_SECONDS, tail_seconds=2,
            )
        fill_row(row, verdict, measured, restarts)
        assert_row(verdict, measured, restarts)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_chaos_single_node_broker_restarted_twenty_times(settings, private_kafka, tmp_path):
    settings = with_services(settings, bootstrap=private_kafka.bootstrap, redis_url=private_kafka.redis_url, partitions=6)
    restarts = 20
    with report.fault(f"broker restart x{restarts}, single node, no supervisor") as row:
        with chaos_run(settings, tmp_path / "logs", audience_size=3000) as run:
            verdict, measured = run_broker_faults(
                run, gates=3, sends_per_second=400, faults=[private_kafka.restart_kafka] * restarts,
                settle_seconds=5, resume_bound=STUCK_SECONDS,
            )
        fill_row(row, verdict, measured, restarts)
        assert_row(verdict, measured, restarts)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_chaos_three_node_cluster_rolling_restart(settings, tmp_path):
    with report.fault("rolling restart, 3-node KRaft (RF 3, min ISR 2), no supervisor") as row:
        with kraft_cluster(tmp_path / "kraft") as cluster:
            settings = with_services(settings, bootstrap=cluster.bootstrap, partitions=6, replication_factor=3)

            def restart(node):  # type: ignore[no-untyped-def]
                def fault() -> None:
                    cluster.stop_node(node)
                    time.sleep(5)  # a few seconds with one broker gone, under traffic
                    cluster.start_node(node)
                    cluster.wait_brokers(cluster.SIZE)
                    cluster.wait_fully_replicated(settings.topics.all_names())

                return fault

            with chaos_run(settings, tmp_path / "logs", audience_size=3000) as run:
                verdict, measured = run_broker_faults(
                    run, gates=3, sends_per_second=400, faults=[restart(n) for n in cluster.nodes],
                    settle_seconds=5, resume_bound=STUCK_SECONDS,
                )
        fill_row(row, verdict, measured, len(cluster.nodes))
        row.pause += f"; longest partition stall {measured.longest_stall:.1f} s (during the restarts)"
        assert_row(verdict, measured, len(cluster.nodes))
