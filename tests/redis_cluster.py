"""A real Redis Cluster for tests: masters and replicas on free loopback ports, or the one named by an env var.

``SENDGATE_TEST_REDIS_CLUSTER`` (a ``redis://host:port`` of any node) names a
running cluster; without it, :func:`redis_cluster` starts 3 masters and 3
replicas from Debian's ``redis-server``, each with its cluster bus on a port
of its own (Redis 7's ``cluster-port``: port + 10000 might be taken or out of
range), joined by ``redis-cli --cluster create``. Every server started here is
stopped again, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import RedisCluster as ClusterClient

from tests.chaos.instances import free_ports
from tests.integration.support import start_redis

CLUSTER_ENV = "SENDGATE_TEST_REDIS_CLUSTER"
NODE_TIMEOUT_MS = 2000


@dataclass
class RedisCluster:
    """``masters`` redis-servers in cluster mode with ``replicas`` replicas each."""

    directory: Path
    masters: int = 3
    replicas: int = 1
    ports: list[int] = field(default_factory=list)
    bus_ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    external_url: str | None = None

    @property
    def url(self) -> str:
        return self.external_url or f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self, index: int = 0) -> redis.Redis:
        """A plain client of one node (CLUSTER commands, DEBUG, INFO)."""
        return redis.Redis(host="127.0.0.1", port=self.ports[index], socket_timeout=5)

    def cluster_client(self) -> ClusterClient:
        return ClusterClient.from_url(self.url, socket_timeout=5)

    def start(self) -> RedisCluster:
        assert shutil.which("redis-cli"), "redis-cli is needed (it comes with redis-server)"
        count = self.masters * (1 + self.replicas)
        ports = free_ports(2 * count)
        self.ports, self.bus_ports = ports[:count], ports[count:]
        for port in self.ports:
            self.start_node(port)
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert created.returncode == 0, f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}"
        self.wait_ok()
        return self

    def start_node(self, port: int) -> None:
        """(Re)start the node of ``port``; its nodes.conf keeps its identity and role."""
        bus_port = self.bus_ports[self.ports.index(port)]
        node_dir = self.directory / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = start_redis(
            port, str(node_dir),
            "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-port", str(bus_port), "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--protected-mode", "no",
        )

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(15)

    def running_ports(self) -> list[int]:
        return [port for port in self.ports if port in self.processes]

    def node_states(self) -> list[str]:
        states = []
        for port in self.running_ports():
            with contextlib.closing(redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)) as client:
                states.append(str(client.cluster("info").get("cluster_state")))
        return states

    def wait_ok(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.node_states()
            if states and all(state == "ok" for state in states):
                return
            assert time.monotonic() < deadline, f"cluster_state not ok on every node within {timeout:g} s: {states}"
            time.sleep(0.2)

    def masters_by_port(self) -> dict[int, list[int]]:
        """Running masters' ports and the replicas' ports of each."""
        with contextlib.closing(redis.Redis(host="127.0.0.1", port=self.running_ports()[0], socket_timeout=5)) as client:
            nodes = client.cluster("nodes")
        by_id = {info["node_id"]: int(address.split(":")[1].split("@")[0]) for address, info in nodes.items()}
        masters: dict[int, list[int]] = {}
        for address, info in nodes.items():
            port = int(address.split(":")[1].split("@")[0])
            if "master" in info["flags"] and "fail" not in info["flags"] and port in self.processes:
                masters.setdefault(port, [])
        for info in nodes.values():
            master = by_id.get(info.get("master_id", "-"))
            if "slave" in info["flags"] and master in masters:
                masters[master].append(by_id[info["node_id"]])
        return masters

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
        self.processes.clear()


@contextlib.contextmanager
def redis_cluster(directory: Path, *, masters: int = 3, replicas: int = 1) -> Iterator[RedisCluster]:
    """A cluster for the caller: the one of ``SENDGATE_TEST_REDIS_CLUSTER``, else a new one, stopped after."""
    external = os.environ.get(CLUSTER_ENV)
    if external:
        yield RedisCluster(directory, external_url=external)
        return
    cluster = RedisCluster(directory, masters=masters, replicas=replicas)
    try:
        yield cluster.start()
    finally:
        cluster.close()
        shutil.rmtree(directory, ignore_errors=True)
