"""In-process recovery of Kafka clients that librdkafka has declared dead.

After a broker restart librdkafka can leave a client in a state it never
leaves again: a transactional producer with a fatal error (e.g.
``INVALID_TXN_STATE`` from an abort issued as the broker stopped), or a static
consumer "fenced by other consumer with same group.instance.id" when that other
consumer was its own earlier JoinGroup, answered while the connection dropped.
Both are cured by a new client with the same identity, as Kafka Streams does;
this module bounds how often, so a client that keeps dying still ends the
process (exit 11) instead of spinning.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from worker.errors import KafkaFatal
from worker.metrics import Metrics

logger = logging.getLogger(__name__)


class ProducerFatal(KafkaFatal):
    """The transactional producer hit a fatal error that is not a fence: rebuilt once, if the budget allows."""


class ConsumerFatal(KafkaFatal):
    """The consumer hit a fatal error (e.g. its static membership taken over): re-created, if the budget allows."""


class RecoveryBudget:
    """At most ``limit`` client rebuilds within ``window`` seconds; one more raises :class:`KafkaFatal` (exit 11)."""

    def __init__(self, *, limit: int, window: float, metrics: Metrics, worker: str) -> None:
        self._limit = limit
        self._window = window
        self._metrics = metrics
        self._worker = worker
        self._times: collections.deque[float] = collections.deque()

    def spend(self, *, client: str, cause: Exception) -> None:
        now = time.monotonic()
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()
        if len(self._times) >= self._limit:
            raise KafkaFatal(
                f"{cause} (already {len(self._times)} Kafka client rebuilds within {self._window:g} s: giving up)"
            ) from cause
        self._times.append(now)
        self._metrics.kafka_recoveries.labels(worker=self._worker, client=client).inc()
        logger.warning(
            "Kafka client dead: rebuilding it in-process",
            extra={"worker": self._worker, "client": client, "cause": str(cause), "recent_rebuilds": len(self._times)},
        )


def close_in_background(client: Any, what: str) -> None:
    """Close a dead client without waiting: its close may wait on a broker that is still down."""

    def close() -> None:
        try:
            client.close()
        except Exception as exc:  # a dead client may refuse to close; it is dropped either way
            logger.info("closing a dead Kafka client failed", extra={"client": what, "error": str(exc)})

    threading.Thread(target=close, name=f"sendgate-close-{what}", daemon=True).start()
