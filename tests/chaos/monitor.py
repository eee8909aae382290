"""Watches the gate's progress from outside: committed input offsets of its consumer group.

The gate commits its input offsets inside each Kafka transaction, so the
group's committed offsets advance exactly when decisions become visible. A
partition *stalls* while it has records waiting (committed < end) and its
committed offset does not move; the longest stall of a run is its "pause".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.chaos.checker import end_offsets
from worker.config import Settings


@dataclass
class Sample:
    at: float  # time.monotonic()
    committed: dict[int, int]
    ends: dict[int, int]

    @property
    def pending(self) -> int:
        return sum(max(0, end - self.committed.get(p, 0)) for p, end in self.ends.items())

    @property
    def done(self) -> int:
        return sum(self.committed.values())


@dataclass
class Stall:
    partition: int
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class ProgressMonitor:
    """Samples the gate group's committed offsets and the input's end offsets every ``interval`` seconds."""

    def __init__(self, settings: Settings, *, interval: float = 0.25) -> None:
        self._settings = settings
        self._interval = interval
        self._topic = settings.topics.requested
        self._group = settings.gate.group_id
        self._stop = threading.Event()
        self.samples: list[Sample] = []
        self.errors = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        # Reconnect within a second of a broker restart, like the workers
        # (worker/kafka/clients.py): with librdkafka's 10 s backoff the samples
        # themselves stopped for seconds after the broker was back.
        fast = {"log_level": 0, "reconnect.backoff.max.ms": 1000}
        admin = AdminClient({**self._settings.kafka.common_config(), **fast})
        # Committed offsets through a consumer that never joins the group. Not
        # AdminClient.list_consumer_group_offsets: librdkafka 2.x crashes the process
        # (NULL cgrp in rd_kafka_handle_OffsetFetch) when the coordinator answers
        # "load in progress", as it does right after a broker restart.
        reader = Consumer(
            {
                **self._settings.kafka.common_config(),
                "group.id": self._group,
                "enable.auto.commit": False,
                # read_uncommitted: no require_stable, so a pending transactional
                # commit does not block the sample (it is simply not counted yet).
                "isolation.level": "read_uncommitted",
                **fast,
            }
        )
        try:
            while not self._stop.is_set():
                try:
                    self.samples.append(self._sample(admin, reader))
                except (KafkaException, KeyError, ValueError) as exc:
                    self.errors += 1  # a restarting broker: keep watching
                    self.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(self._interval)
        finally:
            reader.close()

    def _sample(self, admin: AdminClient, reader: Consumer) -> Sample:
        ends = end_offsets(admin, self._topic, committed=False, timeout=5)
        found = reader.committed([TopicPartition(self._topic, p) for p in ends], timeout=5)
        committed = {tp.partition: max(tp.offset, 0) for tp in found}
        return Sample(time.monotonic(), committed, ends)

    # -- questions about the run -------------------------------------------------
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def caught_up(self, expected_total: int | None = None) -> bool:
        sample = self.latest()
        if sample is None or sample.pending:
            return False
        return expected_total is None or sample.done >= expected_total

    def wait_caught_up(self, expected_total: int, *, timeout: float, tick: Callable[[], None] | None = None) -> float:
        """Wait until the group has committed ``expected_total`` input records; returns when (monotonic).

        ``tick`` runs on every turn of the wait (e.g. a supervisor restarting workers that exited).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sample = self.latest()
            if sample is not None and not sample.pending and sample.done >= expected_total:
                return sample.at
            if tick is not None:
                tick()
            time.sleep(self._interval)
        last = self.latest()
        raise AssertionError(
            f"gates did not catch up within {timeout:g} s: committed {last.done if last else '?'} of {expected_total}, "
            f"pending {last.pending if last else '?'}"
        )

    def wait_deciding(self, *, timeout: float = 90.0) -> None:
        """Wait until the gates have committed some input (workers started, store built)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sample = self.latest()
            if sample is not None and sample.done > 0:
                return
            time.sleep(self._interval)
        raise AssertionError(f"the gates committed nothing within {timeout:g} s")

    def stalls(self, since: float = 0.0, until: float | None = None) -> list[Stall]:
        """Per partition, each interval in which it had pending records and made no progress."""
        samples = [s for s in self.samples if s.at >= since and (until is None or s.at <= until)]
        found: list[Stall] = []
        if len(samples) < 2:
            return found
        for partition in samples[-1].ends:
            # A stall runs from the last sample that saw progress (or nothing to do) to
            # the next one that sees progress, with at least one quiet sample between.
            anchor = samples[0].at
            last = samples[0].committed.get(partition, 0)
            quiet = 0
            for sample in samples[1:]:
                committed = sample.committed.get(partition, 0)
                waiting = sample.ends.get(partition, 0) > committed
                if committed > last or not waiting:
                    if quiet:
                        found.append(Stall(partition, anchor, sample.at))
                    anchor, quiet = sample.at, 0
                else:
                    quiet += 1
                last = committed
            if quiet:
                found.append(Stall(partition, anchor, samples[-1].at))
        return found

    def longest_stall(self, since: float = 0.0, until: float | None = None) -> float:
        stalls = self.stalls(since, until)
        return max((s.seconds for s in stalls), default=0.0)

    def resumed_after(self, moment: float, *, timeout: float, tick: Callable[[], None] | None = None) -> float:
        """Seconds from ``moment`` until the group's committed total first advances after it."""
        deadline = moment + timeout
        base: int | None = None
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            later = [s for s in self.samples if s.at >= moment]
            if later:
                if base is None:
                    base = later[0].done
                for sample in later:
                    # Nothing waiting (traffic ended before this fault) cannot
                    # advance, and needs no resuming: caught up counts as resumed.
                    if sample.done > base or not sample.pending:
                        return sample.at - moment
            time.sleep(self._interval)
        raise AssertionError(f"no progress within {timeout:g} s after the fault ({self.describe_recent(moment)})")

    def every_partition_resumed_after(
        self, moment: float, *, timeout: float, tick: Callable[[], None] | None = None
    ) -> float:
        """Seconds from ``moment`` until every partition has committed more input or has nothing waiting.

        The longest pause of any one partition after a fault, so a gate that
        never came back shows even while the others decide.
        """
        deadline = moment + timeout
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            later = [s for s in self.samples if s.at >= moment]
            if later:
                base = later[0].committed
                worst = 0.0
                for partition in later[0].ends:
                    moved = next(
                        (
                            s.at
                            for s in later
                            if s.committed.get(partition, 0) > base.get(partition, 0)
                            or s.ends.get(partition, 0) <= s.committed.get(partition, 0)
                        ),
                        None,
                    )
                    if moved is None:
                        break
                    worst = max(worst, moved - moment)
                else:
                    return worst
            time.sleep(self._interval)
        raise AssertionError(f"some partition made no progress within {timeout:g} s after the fault ({self.describe_recent(moment)})")

    def describe_recent(self, since: float) -> str:
        later = [s for s in self.samples if s.at >= since]
        last = self.latest()
        return (
            f"{len(later)} samples since, committed {later[0].done if later else '?'} -> {last.done if last else '?'}, "
            f"pending {last.pending if last else '?'}, monitor errors {self.errors} (last: {self.last_error[:200]})"
        )

    def partitions_resumed(self, partitions: set[int], since: float) -> float | None:
        """Seconds from ``since`` until every one of ``partitions`` committed more input; None if some never did."""
        later = [s for s in self.samples if s.at >= since]
        if not later or not partitions:
            return None
        base = later[0].committed
        worst = 0.0
        for partition in partitions:
            moved = next((s.at for s in later if s.committed.get(partition, 0) > base.get(partition, 0)), None)
            if moved is None:
                return None
            worst = max(worst, moved - since)
        return worst

    def progress_between(self, start: float, end: float) -> int:
        """Input records committed between two moments (by the samples nearest inside them)."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return 0
        return inside[-1].done - inside[0].done
