"""Kafka and Redis instances of our own, for faults the shared local stack must never see.

Broker restarts, a stopped or flushed Redis, a SASL listener and
``requirepass`` run on private ports and state folders; everything started
here is stopped again by the context managers (the shared stack on 9092/6379
is used by other tests at the same time).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tests.harness import ROOT, STACK

DEFAULT_STATE = ROOT / "deploy" / "local" / ".state"
# Kafka jars already resolved by a stack elsewhere (e.g. the main checkout of a
# git worktree), read only: SENDGATE_KAFKA_LIB=<state>/lib.
KAFKA_LIB = Path(os.environ.get("SENDGATE_KAFKA_LIB", str(DEFAULT_STATE / "lib")))
SMALL_HEAP = "-Xms128m -Xmx512m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def kafka_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    try:
        return bool(AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


# --- Redis -------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` subprocess on a free loopback port, configured like the stack's."""

    def __init__(self, directory: Path, *, password: str | None = None, port: int | None = None) -> None:
        self.directory = directory
        self.password = password
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5, **kwargs)  # type: ignore[arg-type]

    def start(self) -> RedisServer:
        server = shutil.which("redis-server")
        assert server, "redis-server is needed (deploy/local/stack installs it)"
        argv = [
            server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--maxmemory-policy", "noeviction", "--dir", str(self.directory), "--protected-mode", "no",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not self.answers():
            assert self.process.poll() is None, f"redis-server on {self.port} exited with {self.process.returncode}"
            assert time.monotonic() < deadline, f"redis-server on {self.port} did not answer"
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.3) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server; ``keep_data`` saves an RDB snapshot first, so a restart comes back populated."""
        if self.process is None or self.process.poll() is not None:
            return
        if keep_data:
            with contextlib.suppress(redis.RedisError):
                self.client().shutdown(save=True)
        else:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(15)
        if not keep_data:
            (self.directory / "dump.rdb").unlink(missing_ok=True)

    def restart(self, *, keep_data: bool = False) -> None:
        self.stop(keep_data=keep_data)
        self.start()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)


@contextlib.contextmanager
def redis_server(directory: Path, *, password: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(directory, password=password).start()
    try:
        yield server
    finally:
        server.close()


# --- a private deploy/local/stack ----------------------------------------------


def seed_jars(state_dir: Path) -> None:
    """Copy the shared stack's resolved Kafka jars (read only there), so no Maven run is needed."""
    source = KAFKA_LIB
    if (source / ".complete").is_file() and not (state_dir / "lib").exists():
        shutil.copytree(source, state_dir / "lib")


@dataclass
class PrivateStack:
    """``deploy/local/stack`` with its own state folder and ports: a Kafka and a Redis we may break."""

    state_dir: Path
    kafka_port: int
    controller_port: int
    redis_port: int
    sasl_port: int | None = None
    sasl_username: str = "sendgate"
    sasl_password: str = "sendgate-secret"
    redis_password: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def sasl_bootstrap(self) -> str:
        assert self.sasl_port is not None
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_"))}
        env.update(
            SENDGATE_STACK_DIR=str(self.state_dir),
            KAFKA_PORT=str(self.kafka_port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
            REDIS_PORT=str(self.redis_port),
            KAFKA_HEAP_OPTS=SMALL_HEAP,
        )
        if self.sasl_port:
            env.update(
                KAFKA_SASL_PORT=str(self.sasl_port),
                KAFKA_SASL_USERNAME=self.sasl_username,
                KAFKA_SASL_PASSWORD=self.sasl_password,
            )
        if self.redis_password:
            env["REDIS_PASSWORD"] = self.redis_password
        return env

    def run(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [str(STACK), *args], cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"stack {' '.join(args)} exited {result.returncode}:\n{output[-4000:]}"
        return output

    def up(self) -> None:
        seed_jars(self.state_dir)
        self.run("up")

    def restart_kafka(self) -> None:
        self.run("restart-kafka")

    def kafka_pid(self) -> int | None:
        path = self.state_dir / "kafka" / "kafka.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def down(self) -> None:
        self.run("down", "--purge", timeout=120)


@contextlib.contextmanager
def private_stack(
    base: Path, *, sasl: bool = False, redis_password: str | None = None
) -> Iterator[PrivateStack]:
    """A private Kafka + Redis for the duration of the block; purged afterwards."""
    kafka_port, controller_port, redis_port, sasl_port = free_ports(4)
    stack = PrivateStack(
        state_dir=base,
        kafka_port=kafka_port,
        controller_port=controller_port,
        redis_port=redis_port,
        sasl_port=sasl_port if sasl else None,
        redis_password=redis_password,
    )
    try:
        stack.up()
        yield stack
    finally:
        # The broker's own log outlives the purge: it tells when a restarted broker
        # was really serving again (coordinators loaded), next to the workers' logs.
        with contextlib.suppress(OSError):
            shutil.copytree(base / "logs", base.parent / f"{base.name}-logs", dirs_exist_ok=True)
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            stack.down()
        shutil.rmtree(base, ignore_errors=True)


# --- a three-node KRaft cluster ------------------------------------------------


@dataclass
class KraftNode:
    node_id: int
    broker_port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def props(self) -> Path:
        return self.directory / "server.properties"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class KraftCluster:
    """Three combined broker+controller nodes on loopback, replication factor 3, min ISR 2.

    Started with ``java`` directly from the shared stack's jars (read only);
    each node can be stopped (controlled shutdown) and started again.
    """

    SIZE = 3

    def __init__(self, directory: Path, *, heap: str = SMALL_HEAP) -> None:
        self.directory = directory
        self.heap = heap
        ports = free_ports(2 * self.SIZE)
        self.nodes = [
            KraftNode(i + 1, ports[2 * i], ports[2 * i + 1], directory / f"node{i + 1}") for i in range(self.SIZE)
        ]
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        self.lib = KAFKA_LIB
        assert (self.lib / ".complete").is_file(), (
            "run deploy/local/stack up once (or set SENDGATE_KAFKA_LIB): the cluster reuses its Kafka jars"
        )

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.broker_port}" for n in self.nodes)

    def _java(self, node: KraftNode, *args: str) -> list[str]:
        return [
            "java", *self.heap.split(), "-XX:+UseG1GC", "-XX:ParallelGCThreads=1", "-XX:ConcGCThreads=1",
            "-XX:CICompilerCount=2", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={ROOT / 'deploy' / 'local' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.directory / 'logs'}",
            "-cp", f"{self.lib}/*", *args,
        ]

    def _write_props(self, node: KraftNode) -> None:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        node.directory.mkdir(parents=True, exist_ok=True)
        node.props.write_text(
            f"""process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{node.broker_port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={node.directory / 'data'}
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
auto.create.topics.enable=false
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
transaction.max.timeout.ms=3600000
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
log.segment.bytes=67108864
"""
        )

    def start(self) -> KraftCluster:
        for node in self.nodes:
            self._write_props(node)
            result = subprocess.run(
                # "=": a random id may begin with "-", which argparse would take for an option.
                self._java(node, "kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}", "-c", str(node.props)),
                capture_output=True, text=True, timeout=120, check=False,
            )
            assert result.returncode == 0, f"format node {node.node_id}: {result.stdout}{result.stderr}"
        for node in self.nodes:
            self.start_node(node)
        self.wait_brokers(self.SIZE)
        return self

    def start_node(self, node: KraftNode) -> None:
        (node.directory / "logs").mkdir(parents=True, exist_ok=True)
        out = open(node.directory / "logs" / "kafka.out", "ab")  # noqa: SIM115 - the child keeps it
        node.process = subprocess.Popen(
            self._java(node, "kafka.Kafka", str(node.props)), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    def stop_node(self, node: KraftNode, *, timeout: float = 60.0) -> None:
        """SIGTERM: a controlled shutdown (leadership moves away first)."""
        if node.alive:
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(timeout)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(15)

    def wait_brokers(self, count: int, *, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                metadata = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0}).list_topics(timeout=5)
                if len(metadata.brokers) >= count:
                    return
            except KafkaException:
                pass
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None and count == self.SIZE:
                    raise AssertionError(f"Kafka node {node.node_id} exited: {self.node_log(node)[-3000:]}")
            assert time.monotonic() < deadline, f"{count} brokers not up within {timeout:g} s"
            time.sleep(0.5)

    def wait_fully_replicated(self, topics: list[str], *, timeout: float = 180.0) -> float:
        """Until every partition of ``topics`` has all replicas in sync again; returns the seconds it took."""
        started = time.monotonic()
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while True:
            try:
                metadata = admin.list_topics(timeout=5)
                lagging = [
                    (name, p.id)
                    for name in topics
                    for p in metadata.topics[name].partitions.values()
                    if len(p.isrs) < len(p.replicas) or p.leader < 0
                ]
                if not lagging:
                    return time.monotonic() - started
            except (KafkaException, KeyError):
                pass
            assert time.monotonic() - started < timeout, f"partitions not back in sync within {timeout:g} s"
            time.sleep(0.5)

    def node_log(self, node: KraftNode) -> str:
        path = node.directory / "logs" / "kafka.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for node in self.nodes:
            if node.alive:
                assert node.process is not None
                node.process.kill()
                node.process.wait(15)


@contextlib.contextmanager
def kraft_cluster(directory: Path) -> Iterator[KraftCluster]:
    cluster = KraftCluster(directory)
    try:
        yield cluster.start()
    finally:
        cluster.close()
        shutil.rmtree(directory, ignore_errors=True)


# --- one private stack shared by the tests of a session that need it -----------------

_shared: dict[str, object] = {"stack": None, "users": 0}


@contextlib.contextmanager
def shared_private_stack(base: Path) -> Iterator[PrivateStack]:
    """A private Kafka (with a SASL/PLAIN listener) + Redis, started once for every session-scoped
    fixture that asks for it and stopped when the last one is finalised: the broker-restart and
    security tests share one start-up (~20 s on a small box). Users may restart its Kafka."""
    if _shared["stack"] is None:
        context = private_stack(base / "private-stack", sasl=True)
        stack = context.__enter__()
        _shared.update(stack=stack, context=context)
    _shared["users"] = int(_shared["users"]) + 1  # type: ignore[call-overload]
    try:
        yield _shared["stack"]  # type: ignore[misc]
    finally:
        _shared["users"] = int(_shared["users"]) - 1  # type: ignore[call-overload]
        if _shared["users"] == 0:
            context = _shared.pop("context")
            _shared["stack"] = None
            context.__exit__(None, None, None)  # type: ignore[attr-defined]
