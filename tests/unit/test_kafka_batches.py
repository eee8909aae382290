"""available_batch: takes what the consumer holds, waits only when it holds nothing."""

from __future__ import annotations

from typing import Any

from worker.kafka.batches import available_batch


class FakeConsumer:
    """consume(n, timeout) as librdkafka: up to n of what is queued; a wait delivers what ``arrivals`` holds."""

    def __init__(self, queued: list[str], arrivals: list[str] | None = None) -> None:
        self.queued = list(queued)
        self.arrivals = list(arrivals or [])
        self.calls: list[tuple[int, float]] = []

    def consume(self, n: int, timeout: float) -> list[Any]:
        self.calls.append((n, timeout))
        if not self.queued and timeout > 0:
            self.queued, self.arrivals = self.arrivals, []
        taken, self.queued = self.queued[:n], self.queued[n:]
        return taken


def test_takes_what_is_queued_without_waiting():
    consumer = FakeConsumer(["a", "b", "c"])
    assert available_batch(consumer, 500, 0.05) == ["a", "b", "c"]  # type: ignore[arg-type]
    assert consumer.calls == [(500, 0)]


def test_never_more_than_asked():
    consumer = FakeConsumer(list("abcdef"))
    assert available_batch(consumer, 4, 0.05) == list("abcd")  # type: ignore[arg-type]


def test_waits_for_the_first_when_empty_then_takes_the_rest():
    consumer = FakeConsumer([], arrivals=list("xyz"))
    assert available_batch(consumer, 500, 0.05) == list("xyz")  # type: ignore[arg-type]
    assert consumer.calls == [(500, 0), (1, 0.05), (499, 0)]


def test_nothing_within_the_timeout_is_an_empty_batch():
    consumer = FakeConsumer([])
    assert available_batch(consumer, 500, 0.05) == []  # type: ignore[arg-type]
    assert consumer.calls == [(500, 0), (1, 0.05)]


def test_zero_timeout_never_waits():
    consumer = FakeConsumer([], arrivals=["late"])
    assert available_batch(consumer, 500, 0) == []  # type: ignore[arg-type]
    assert consumer.calls == [(500, 0)]
