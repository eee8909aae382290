"""The load generator's pacing: no record goes out before its time, none is lost or doubled, a full queue is waited out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from worker.loadgen.producing import PACE_TOLERANCE_SECONDS, ProduceReport, produce_encoded


class RecordingProducer:
    """Notes each produce() with the time it was called; ``full`` calls raise BufferError first."""

    def __init__(self, *, full: int = 0) -> None:
        self.produced: list[tuple[str, bytes, bytes, float]] = []
        self.full = full
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.produced.append((topic, value, key, time.monotonic()))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def items(count: int) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f"value-{i}".encode()) for i in range(count)]


@pytest.mark.parametrize("rate", [2_000.0, 20_000.0])
def test_paced_records_go_out_in_order_and_never_before_their_time(rate: float) -> None:
    producer = RecordingProducer()
    report = ProduceReport("t")
    started = time.monotonic()
    produce_encoded(producer, "t", items(600), report, rate=rate)  # type: ignore[arg-type]
    assert [key for _, _, key, _ in producer.produced] == [key for key, _ in items(600)]
    for index, (_, _, _, at) in enumerate(producer.produced):
        # The schedule starts inside produce_encoded, a little after `started`.
        assert at >= started + index / rate - PACE_TOLERANCE_SECONDS, f"record {index} went out early"
    assert report.records == 600
    assert report.bytes == sum(len(value) for _, value in items(600))
    assert report.seconds >= 599 / rate - PACE_TOLERANCE_SECONDS


def test_a_paced_stamp_is_taken_before_its_record_is_produced() -> None:
    producer = RecordingProducer()
    stamps: dict[bytes, float] = {}

    def stamped() -> Iterator[tuple[bytes, bytes]]:
        for key, value in items(300):
            stamps[key] = time.monotonic()
            yield key, value

    produce_encoded(producer, "t", stamped(), ProduceReport("t"), rate=10_000.0)  # type: ignore[arg-type]
    assert all(stamps[key] <= at for _, _, key, at in producer.produced)


def test_a_full_local_queue_is_polled_until_the_record_is_taken_once() -> None:
    producer = RecordingProducer(full=3)
    progress: list[int] = []
    produce_encoded(producer, "t", items(10), ProduceReport("t"), on_progress=progress.append)  # type: ignore[arg-type]
    assert [key for _, _, key, _ in producer.produced] == [key for key, _ in items(10)]
    assert producer.polls >= 3
    assert progress[-1] == 10
