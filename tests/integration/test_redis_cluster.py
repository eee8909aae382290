"""A Redis Cluster is refused at start-up, clearly, instead of failing later with CROSSSLOT/MOVED.

A real three-master cluster (no replicas) runs on free loopback ports, with
its cluster bus on ports of its own; a standalone redis-server next to it
passes the same check. ``sendgate preferences`` and ``sendgate gate`` pointed
at a cluster node exit with code 14 (CONFIG) and say why. Every server started
here is stopped again, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.chaos.instances import free_ports, redis_server
from tests.integration.support import run_cli, start_redis
from worker.config import RedisSettings, Settings
from worker.errors import ExitCode
from worker.state.topology import (
    RedisClusterRefused,
    cluster_refusal,
    require_standalone,
)

MASTERS = 3
CLI_TIMEOUT_SECONDS = 45.0


@dataclass
class RedisCluster:
    """``MASTERS`` redis-servers in cluster mode, joined by ``redis-cli --cluster create``."""

    directory: Path
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self, index: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[index], socket_timeout=5)

    def start(self) -> RedisCluster:
        assert shutil.which("redis-cli"), "redis-cli is needed (it comes with redis-server)"
        ports = free_ports(2 * MASTERS)
        # Redis 7 takes the bus port as a setting: port + 10000 might be taken or out of range.
        self.ports, bus_ports = ports[:MASTERS], ports[MASTERS:]
        for port, bus_port in zip(self.ports, bus_ports, strict=True):
            node_dir = self.directory / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.processes.append(
                start_redis(
                    port, str(node_dir),
                    "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-port", str(bus_port), "--cluster-node-timeout", "5000", "--protected-mode", "no",
                )
            )
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert created.returncode == 0, f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}"
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for index in range(MASTERS):
                with contextlib.closing(self.client(index)) as client:
                    states.append(client.cluster("info").get("cluster_state"))
            if states == ["ok"] * MASTERS:
                return
            assert time.monotonic() < deadline, f"cluster_state not ok on every node within {timeout:g} s: {states}"
            time.sleep(0.2)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)


@contextlib.contextmanager
def redis_cluster(directory: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(directory)
    try:
        yield cluster.start()
    finally:
        cluster.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as started:
        yield started


def on_cluster(settings: Settings, cluster: RedisCluster) -> Settings:
    # Short timeouts: a misbehaving node must not stretch the test.
    redis_settings = RedisSettings(url=cluster.url, socket_timeout_seconds=2.0, connect_timeout_seconds=2.0)
    return settings.model_copy(update={"redis": redis_settings})


def worker_outcomes(settings: Settings, cluster: RedisCluster) -> dict[str, tuple[int | None, str]]:
    """(exit code, output) of the applier and the gate started against a cluster node; None = did not exit."""
    outcomes: dict[str, tuple[int | None, str]] = {}
    for command in ("preferences", "gate"):
        try:
            outcomes[command] = run_cli(on_cluster(settings, cluster), command, timeout=CLI_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            outcomes[command] = (None, f"still running after {CLI_TIMEOUT_SECONDS:g} s")
    return outcomes


def assert_refused(outcomes: dict[str, tuple[int | None, str]], cluster: RedisCluster) -> None:
    expected = cluster_refusal(f"127.0.0.1:{cluster.ports[0]}")
    for command, (code, output) in outcomes.items():
        flat = " ".join(output.split())  # the console wraps long lines
        assert code == ExitCode.CONFIG, (
            f"sendgate {command} against a Redis Cluster: exit {code}, expected {int(ExitCode.CONFIG)} "
            f"(is require_standalone called from RedisStateStore.check()?)\n{output[-3000:]}"
        )
        assert expected in flat, f"sendgate {command} does not say why:\n{output[-3000:]}"


def test_require_standalone_refuses_every_cluster_node(cluster):
    for index, port in enumerate(cluster.ports):
        with contextlib.closing(cluster.client(index)) as client:
            assert client.info("cluster")["cluster_enabled"] == 1
            with pytest.raises(RedisClusterRefused) as refused:
                require_standalone(client)
        assert str(refused.value) == cluster_refusal(f"127.0.0.1:{port}")
        assert refused.value.exit_code == ExitCode.CONFIG


def test_require_standalone_lets_a_standalone_redis_pass(tmp_path):
    with redis_server(tmp_path / "standalone") as server, contextlib.closing(server.client()) as client:
        assert client.info("cluster")["cluster_enabled"] == 0
        require_standalone(client)


def test_applier_and_gate_refuse_a_redis_cluster_at_start_with_exit_14(settings, cluster):
    outcomes = worker_outcomes(settings, cluster)
    assert_refused(outcomes, cluster)
