"""SPEC §6.2 and §6.4 under Redis faults, on a redis-server of our own.

Redis stopped (and back with its data), restarted empty, emptied with FLUSHALL
under running workers: nothing wrongly allowed, nothing decided while the
store is unavailable or not rebuilt, and processing resumes once it is back.
The short FLUSHALL run is part of ``make test``; the outage with an empty
restart is already there (tests/integration/test_gate_faults.py). The faults
of a Redis Cluster (a master killed, a slot migration, one shard's keys lost)
are in tests/chaos/test_redis_cluster_faults.py.
"""

from __future__ import annotations

import pytest

from tests import harness
from tests.chaos import report
from tests.chaos.faults import (
    REDIS_EMPTY,
    REDIS_FLUSHALL,
    REDIS_STOPPED,
    run_redis_fault,
)
from tests.chaos.instances import redis_server
from tests.chaos.run import chaos_run, with_services

RESUME_BOUND_SECONDS = 30.0
FAULT_NAMES = {
    REDIS_STOPPED: "Redis stopped 8 s, back with its data",
    REDIS_EMPTY: "Redis stopped 8 s, restarted empty",
    REDIS_FLUSHALL: "Redis FLUSHALL mid-run",
}


def redis_settings(settings, server):  # type: ignore[no-untyped-def]
    # Short timeouts: a dead Redis is noticed in half a second, as in production with a short timeout.
    return with_services(settings, redis_url=server.url, partitions=6, socket_timeout_seconds=0.5, connect_timeout_seconds=0.5)


def assert_redis_outcome(verdict, outcome) -> None:  # type: ignore[no-untyped-def]
    assert verdict.clean, verdict.describe()
    assert outcome.decided_while_unavailable == 0, f"{outcome.decided_while_unavailable} decisions while the state was unavailable"
    assert outcome.resumed_after < RESUME_BOUND_SECONDS


def test_flushall_under_running_gates_allows_nothing_until_the_store_is_rebuilt(settings, tmp_path):
    with report.fault(f"{FAULT_NAMES[REDIS_FLUSHALL]} (short)") as row:
        with redis_server(tmp_path / "redis") as server, chaos_run(
            redis_settings(settings, server), tmp_path / "logs", audience_size=1000
        ) as run:
            verdict, _measured, outcome = run_redis_fault(run, server, fault=REDIS_FLUSHALL, records=6000, sends_per_second=500)
        row.fill(
            [verdict],
            pause=f"resumed {outcome.resumed_after:.1f} s after the flush",
            note=f"store ready again {outcome.ready_after:.1f} s after the flush" if outcome.ready_after is not None else "",
        )
        assert_redis_outcome(verdict, outcome)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("fault", [REDIS_STOPPED, REDIS_EMPTY, REDIS_FLUSHALL])
def test_chaos_redis_fault(services, tmp_path, fault):
    verdicts, outcomes = [], []
    with report.fault(FAULT_NAMES[fault]) as row:
        for attempt in range(2):
            settings = harness.settings_for(services, harness.unique_prefix())
            with redis_server(tmp_path / f"redis-{attempt}") as server, chaos_run(
                redis_settings(settings, server), tmp_path / f"logs-{attempt}", audience_size=3000, seed=attempt
            ) as run:
                verdict, _measured, outcome = run_redis_fault(
                    run, server, fault=fault, records=30_000, sends_per_second=800, outage_seconds=8, warmup_seconds=8
                )
            verdicts.append(verdict)
            outcomes.append(outcome)
        resumed = max(o.resumed_after for o in outcomes)
        ready = [o.ready_after for o in outcomes if o.ready_after is not None]
        row.fill(
            verdicts,
            pause=f"resumed <= {resumed:.1f} s after Redis was back",
            note=(f"store ready <= {max(ready):.1f} s after; " if ready else "")
            + f"decisions while unavailable: {sum(o.decided_while_unavailable for o in outcomes)}",
        )
        for verdict, outcome in zip(verdicts, outcomes, strict=True):
            assert_redis_outcome(verdict, outcome)
