"""Helpers for integration tests: produce records, read topics under read_committed, run workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from pydantic import SecretStr

from worker.assembly import Runtime, build_applier, build_gate
from worker.codec import AvroCodec
from worker.config import Settings
from worker.models import Category, Channel, PreferenceEvent, PreferenceEventType, PreferenceSource, SendRequest
from worker.policy.event_keys import kafka_key

NOW_MS = 1_790_000_000_000


def now_ms() -> int:
    return int(time.time() * 1000)


def send_request(**overrides: Any) -> SendRequest:
    values: dict[str, Any] = {
        "message_id": uuid.uuid4().hex,
        "org_id": "org-a",
        "user_id": "user-1",
        "contact_id": "contact-1",
        "channel": Channel.EMAIL,
        "category": Category.MARKETING,
        "to": "jane@example.com",
        "from_": "agent@lender.example",
        "requested_at": now_ms(),
        "campaign_id": "campaign-1",
    }
    values.update(overrides)
    return SendRequest(**values)


def preference_event(type_: PreferenceEventType, **overrides: Any) -> PreferenceEvent:
    values: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "org_id": "org-a",
        "occurred_at": now_ms(),
        "source": PreferenceSource.PREFERENCE_CENTER,
        "type": type_,
    }
    values.update(overrides)
    return PreferenceEvent(**values)


def producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka.common_config(), "enable.idempotence": True, "linger.ms": 2})


def produce_events(settings: Settings, codec: AvroCodec, events: list[PreferenceEvent], p: Producer | None = None) -> None:
    p = p or producer(settings)
    for event in events:
        p.produce(settings.topics.preferences, key=kafka_key(event).encode(), value=codec.encode("PreferenceEvent", event.to_record()))
    assert p.flush(30) == 0


def produce_sends(settings: Settings, codec: AvroCodec, requests: list[SendRequest], p: Producer | None = None) -> list[bytes]:
    p = p or producer(settings)
    values = []
    for request in requests:
        value = codec.encode("SendRequest", request.to_record())
        values.append(value)
        p.produce(settings.topics.requested, key=request.message_id.encode(), value=value)
        p.poll(0)
    assert p.flush(30) == 0
    return values


def produce_raw(settings: Settings, topic: str, items: list[tuple[bytes | None, bytes | None]]) -> None:
    p = producer(settings)
    for key, value in items:
        p.produce(topic, key=key, value=value)
    assert p.flush(30) == 0


def read_committed(settings: Settings, topic: str, *, timeout: float = 30.0) -> list[Message]:
    """Every committed record of ``topic`` up to its current last stable offset."""
    consumer = Consumer(
        {
            **settings.kafka.common_config(),
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending = {p for p, end in ends.items() if end > 0}
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    if message.error().code() == -191:  # _PARTITION_EOF
                        pending.discard(message.partition())
                    continue
                records.append(message)
                if message.offset() + 1 >= ends[message.partition()]:
                    pending.discard(message.partition())
        return records
    finally:
        consumer.close()


def headers_of(message: Message) -> dict[str, str]:
    return {k: (v.decode() if v is not None else "") for k, v in (message.headers() or [])}


@dataclass
class Outputs:
    allowed: list[Message] = field(default_factory=list)
    suppressed: list[Message] = field(default_factory=list)
    dead_letter: list[Message] = field(default_factory=list)

    def total(self) -> int:
        return len(self.allowed) + len(self.suppressed) + len(self.dead_letter)


def read_outputs(settings: Settings) -> Outputs:
    return Outputs(
        allowed=read_committed(settings, settings.topics.allowed),
        suppressed=read_committed(settings, settings.topics.suppressed),
        dead_letter=read_committed(settings, settings.topics.dead_letter),
    )


def wait_for_outputs(settings: Settings, expected: int, *, timeout: float = 60.0) -> Outputs:
    deadline = time.monotonic() + timeout
    outputs = read_outputs(settings)
    while outputs.total() < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        outputs = read_outputs(settings)
    return outputs


class WorkerThread:
    """Runs the applier or the gate in a thread of the test process."""

    def __init__(self, runtime: Runtime, target: Any) -> None:
        self.runtime = runtime
        self.error: BaseException | None = None
        self.result: Any = None

        def work() -> None:
            try:
                self.result = target()
            except BaseException as exc:  # reported by stop()
                self.error = exc

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> Any:
        self.runtime.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error
        return self.result


@contextlib.contextmanager
def _running(settings: Settings, build: Any) -> Iterator[Any]:
    runtime = Runtime.create(settings)
    built = build(runtime)
    worker = WorkerThread(runtime, built.run)
    try:
        yield built
    finally:
        worker.stop()


def running_applier(settings: Settings) -> contextlib.AbstractContextManager[Any]:
    """A PreferenceApplier running in a thread until the block ends."""
    return _running(settings, build_applier)


def running_gate(settings: Settings) -> contextlib.AbstractContextManager[Any]:
    """A Gate running in a thread until the block ends."""
    return _running(settings, build_gate)


def wait_until(predicate: Any, *, timeout: float = 30.0, interval: float = 0.05, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def settings_env(settings: Settings) -> dict[str, str]:
    """The SENDGATE_* environment that reproduces ``settings`` in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDGATE_")}

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            if prefix.endswith("EXTRA"):
                if value:
                    env[prefix] = __import__("json").dumps(value)
                return
            for key, item in value.items():
                flatten(f"{prefix}__{key.upper()}", item)
        elif isinstance(value, SecretStr):
            env[prefix] = value.get_secret_value()
        elif value is not None:
            env[prefix] = str(value).lower() if isinstance(value, bool) else str(value)

    data = settings.model_dump()
    for section, values in data.items():
        flatten(f"SENDGATE_{section.upper()}", values)
    return env


class CliProcess:
    """A ``sendgate`` subprocess whose output goes to a file (a pipe nobody reads would block it)."""

    def __init__(self, settings: Settings, args: tuple[str, ...], extra_env: dict[str, str] | None = None) -> None:
        env = {**settings_env(settings), **(extra_env or {})}
        # Open for the subprocess's lifetime; close() closes and removes it.
        self._log = tempfile.NamedTemporaryFile(prefix="sendgate-cli-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()
        os.unlink(self._log.name)


def start_cli(settings: Settings, *args: str, extra_env: dict[str, str] | None = None) -> CliProcess:
    return CliProcess(settings, args, extra_env)


def run_cli(settings: Settings, *args: str, timeout: float = 120, extra_env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a ``sendgate`` command to its end; returns (exit code, combined output)."""
    process = CliProcess(settings, args, extra_env)
    try:
        return process.wait(timeout), process.output()
    finally:
        process.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(port: int, directory: str, *options: str) -> subprocess.Popen:
    """A throw-away redis-server on loopback (no persistence) for fault tests."""
    server = shutil.which("redis-server")
    assert server, "redis-server is needed (deploy/local/stack installs it)"
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--maxmemory-policy", "noeviction", "--dir", directory, *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: redis_answers(port), timeout=10, message="redis-server up")
    return process
