"""How long the gates paused after a broker restart, measured from what they committed.

The pause of one restart is judged per input partition, from the moment the
broker answered again (a fresh client's metadata request, see
:class:`BrokerAnswers`) to the first record of that partition decided after
it, as stamped in the committed output (``sendgate-decided-at`` /
``decided_at``). A partition that had nothing to decide at that moment is
measured from the acknowledgement of its next record instead, so a slow
upstream producer does not count as a slow gate. Nothing here depends on how
often a monitor samples, nor on how fast the monitor's own clients reconnect.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.chaos.checker import Output
from tests.chaos.workload import SentRecord

PROBE_TIMEOUT_SECONDS = 0.5
PROBE_INTERVAL_SECONDS = 0.05


class BrokerAnswers:
    """Watches a broker being restarted: when it went away, when it answered again, and when it served the group again.

    "Away" is its port refusing connections: a metadata request that merely
    times out on a busy box does not prove the broker stopped (taking one for
    it once put "back" before the restart had begun). "Answered" is a new
    client (no reconnect backoff carried over) getting metadata that names a
    broker, as ``deploy/local/stack`` waits for, once the port was seen refusing.

    With ``group`` and ``topic``, the watch goes on after that until a new
    consumer of ``group`` is given the committed offset of ``topic``'s first
    partition: the broker's group coordinator has loaded the group again
    (after a restart it answers "coordinator load in progress" for a while,
    seconds on a busy box, and no worker can rewind, join or commit before).
    That moment is :attr:`coordinator_at`; call :meth:`coordinator_back` for it.
    """

    def __init__(self, bootstrap: str, *, group: str | None = None, topic: str | None = None) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self._topic = topic
        self._stop = threading.Event()
        self.down_at: float | None = None  # time.time() of the first probe that failed
        self.back_at: float | None = None  # time.time() of the first answer after that
        self.coordinator_at: float | None = None  # time.time() of the group coordinator's first answer after that
        self._thread = threading.Thread(target=self._run, name="chaos-broker-answers", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.back_at is None or self._group is None:
            self._stop.set()
            self._thread.join(5)
        # else the coordinator watch goes on: see coordinator_back()

    def coordinator_back(self, timeout: float) -> float | None:
        """:attr:`coordinator_at`, waited for at most ``timeout`` seconds (None if it never answered)."""
        self._thread.join(timeout)
        self._stop.set()
        return self.coordinator_at

    def _answers(self) -> bool:
        admin = AdminClient({"bootstrap.servers": self._bootstrap, "log_level": 0, "socket.connection.setup.timeout.ms": 1000})
        try:
            return bool(admin.list_topics(timeout=PROBE_TIMEOUT_SECONDS).brokers)
        except KafkaException:
            return False

    def _coordinator_answers(self) -> bool:
        assert self._group is not None and self._topic is not None
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": self._group,  # an offset fetch only: it never joins the group
                "enable.auto.commit": False,
                "log_level": 0,
                "socket.connection.setup.timeout.ms": 1000,
            }
        )
        try:
            consumer.committed([TopicPartition(self._topic, 0)], timeout=PROBE_TIMEOUT_SECONDS)
            return True
        except KafkaException:
            return False
        finally:
            consumer.close()

    def _refused(self) -> bool:
        host, _, port = self._bootstrap.split(",")[0].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_SECONDS):
                return False
        except ConnectionRefusedError:
            return True
        except OSError:  # a timeout proves nothing either way
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.down_at is None:
                if self._refused():
                    self.down_at = time.time()
            elif self.back_at is None:
                if self._answers():
                    self.back_at = time.time()
                    if self._group is None:
                        return
            elif self._coordinator_answers():
                self.coordinator_at = time.time()
                return
            self._stop.wait(PROBE_INTERVAL_SECONDS)


@dataclass
class RestartResume:
    """One restart: seconds from the broker answering to each partition's first decision after it."""

    back_at: float  # time.time()
    per_partition: dict[int, float]

    @property
    def first(self) -> float:
        """Until the first record of any partition was decided."""
        return min(self.per_partition.values(), default=0.0)

    @property
    def every_partition(self) -> float:
        """Until every partition had decided a record again: the pause of the restart."""
        return max(self.per_partition.values(), default=0.0)

    @property
    def slowest_partition(self) -> int | None:
        return max(self.per_partition, key=self.per_partition.__getitem__) if self.per_partition else None


def resume_after(
    back_at: float,
    sends: Iterable[SentRecord],
    outputs: dict[str, list[Output]],
    *,
    wall_offset: float,
) -> RestartResume:
    """The pause of one restart from the committed outputs (``wall_offset`` = time.time() - time.monotonic()).

    Per partition: the earliest decision stamped at or after ``back_at``,
    minus the later of ``back_at`` and the acknowledgement of the earliest
    record decided after it (the moment there was something to decide).
    """
    back_ms = back_at * 1000
    first_decided: dict[int, float] = {}
    waiting_since: dict[int, float] = {}
    for record in sends:
        if record.partition < 0:
            continue
        decided = [o.decided_at_ms for o in outputs.get(record.message_id, []) if o.decided_at_ms is not None]
        if not decided or min(decided) < back_ms:
            continue
        at = min(decided) / 1000
        partition = record.partition
        if at < first_decided.get(partition, float("inf")):
            first_decided[partition] = at
        acked = back_at if record.acked_at is None else record.acked_at + wall_offset
        available = max(back_at, acked)
        if available < waiting_since.get(partition, float("inf")):
            waiting_since[partition] = available
    return RestartResume(
        back_at, {p: max(0.0, first_decided[p] - waiting_since[p]) for p in sorted(first_decided)}
    )


def waited_through(back_at: float, sends: Iterable[SentRecord], outputs: dict[str, list[Output]], *, wall_offset: float) -> int:
    """How many records handed to the producer before ``back_at`` were first decided at or after it.

    They were waiting or in flight when the broker came back: proof that the
    restart landed on live traffic, read from the outputs, so it holds however
    fast the gates resume (a sample of pending records right after "back" once
    found none because the gates had already caught up).
    """
    back_ms = back_at * 1000
    count = 0
    for record in sends:
        if record.produced_at + wall_offset >= back_at:
            continue
        decided = [o.decided_at_ms for o in outputs.get(record.message_id, []) if o.decided_at_ms is not None]
        if decided and min(decided) >= back_ms:
            count += 1
    return count


def summary(pauses: list[float], *, bound: float = 5.0) -> str:
    """Median, maximum and how many exceed ``bound``, e.g. ``median 1.2 s, max 3.4 s, 0 of 20 > 5 s``."""
    if not pauses:
        return "no pauses measured"
    over = sum(1 for p in pauses if p > bound)
    return f"median {statistics.median(pauses):.1f} s, max {max(pauses):.1f} s, {over} of {len(pauses)} > {bound:g} s"
