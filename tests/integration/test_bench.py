"""``sendgate bench --quick`` end to end on the real stack: JSON with every section, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis
from confluent_kafka.admin import AdminClient

from tests.integration.support import settings_env


def sendgate(settings, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], env=settings_env(settings), capture_output=True, text=True, timeout=timeout
    )


def test_quick_bench_runs_end_to_end_and_writes_json(settings, tmp_path):
    output = tmp_path / "bench.json"
    result = sendgate(settings, "bench", "--quick", "--output", str(output))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(output.read_text())

    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    assert results["baseline"]["records"] == results["config"]["sends"] == results["gate"]["records"]
    assert results["baseline"]["records_per_second"] > 0 and results["gate"]["records_per_second"] > 0
    assert results["ratio"] > 0
    gate = results["gate"]
    assert gate["allowed"] + gate["suppressed"] == gate["records"] and gate["dead_lettered"] == 0
    assert 0.1 < gate["suppressed_share"] < 0.4
    assert gate["round_trips_per_batch"] == 1.0  # SPEC: one state round trip per batch
    assert gate["read_requests_per_batch"] >= 1.0  # other tests may share the Redis: at least ours
    assert {"consume", "decode", "state", "produce", "commit"} <= set(gate["phases"])
    latency = results["latency"]
    assert latency["records"] > 0 and 0 < latency["p50_ms"] <= latency["p99_ms"]
    assert "progress" in latency["gate_process"], latency["gate_process"]
    rebuild = results["rebuild"]
    assert rebuild["events"] == results["preload"]["events"] and rebuild["rejected"] > 0
    assert rebuild["events_per_second"] > 0 and rebuild["facts"] > 0 and rebuild["memory_usage_bytes_per_fact"] > 0
    assert set(results["targets"]) and all("met" in check for check in results["targets"].values())
    assert set(results["stages"]) == {"setup", "preload", "rebuild", "sends", "baseline", "gate", "latency"}
    assert "sendgate bench" in result.stdout

    # Topics and Redis keys of the run are gone.
    prefix = results["prefix"]
    topics = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).list_topics(timeout=10).topics
    assert not [name for name in topics if name.startswith(prefix)]
    client = redis.Redis.from_url(settings.redis.url)
    try:
        assert not list(client.scan_iter(match=f"sg{prefix}:*", count=1000))
    finally:
        client.close()


def test_quick_bench_also_times_the_gate_on_a_cluster(settings, redis_cluster_service, tmp_path):
    output = tmp_path / "bench.json"
    result = sendgate(settings, "bench", "--quick", "--also-cluster", redis_cluster_service.url, "--output", str(output))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(output.read_text())

    cluster = results["cluster"]
    assert cluster["masters"] == 3 and len(cluster["read_requests_per_node_per_batch"]) == 3
    assert cluster["records_per_second"] > 0 and cluster["ratio"] > 0 and cluster["to_standalone_gate"] > 0
    assert cluster["prepared"]["events"] == results["preload"]["events"]
    assert cluster["allowed"] == results["gate"]["allowed"] and cluster["suppressed"] == results["gate"]["suppressed"]
    assert cluster["dead_lettered"] == 0 and cluster["fail_closed_pauses"] == 0
    assert cluster["round_trips_per_batch"] == 1.0  # one pipeline per batch, one request per master in it
    # Every batch reads through at least one master; the cluster is the test's own, so the sum is our gate's calls.
    assert sum(cluster["read_requests_per_node_per_batch"].values()) >= 1.0
    assert cluster["read_requests_per_batch"] == pytest.approx(sum(cluster["read_requests_per_node_per_batch"].values()), abs=0.01)
    assert {"cluster prepare", "cluster gate"} <= set(results["stages"])
    assert "gate on cluster (3 masters)" in result.stdout

    client = redis_cluster_service.cluster_client()
    try:
        assert not list(client.scan_iter(match=f"sg{results['prefix']}*", count=1000))
    finally:
        client.close()


@pytest.mark.parametrize("args", [("--sends", "0"), ("--quick", "--orgs", "100000"), ("--latency-rate", "0"),
                                  ("--quick", "--also-cluster", "127.0.0.1:7000")])
def test_bad_arguments_exit_2(settings, args):
    result = sendgate(settings, "bench", *args)
    assert result.returncode == 2, result.stdout + result.stderr
