"""The committed end of a topic: what a read_committed consumer can reach.

The gate's freshness barrier compares these offsets of ``preferences.changed``
with the applier's stored progress: a preference event acknowledged by Kafka
lies below them, so progress at or past them means it has been applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from worker.errors import ConfigurationError, RetryableError

PARTITIONS_REFRESH_SECONDS = 30.0


class OffsetsUnavailable(RetryableError):
    """Kafka did not answer an offsets request in time."""


class CommittedEndOffsets:
    """Reads the last stable offset of every partition of one topic in one request."""

    def __init__(self, admin: AdminClient, topic: str, *, timeout_seconds: float = 5.0) -> None:
        self._admin = admin
        self._topic = topic
        self._timeout = timeout_seconds
        self._partitions: list[int] = []
        self._partitions_read_at = 0.0

    def partitions(self) -> list[int]:
        now = time.monotonic()
        if not self._partitions or now - self._partitions_read_at > PARTITIONS_REFRESH_SECONDS:
            try:
                metadata = self._admin.list_topics(self._topic, timeout=self._timeout)
            except KafkaException as exc:
                raise OffsetsUnavailable(f"metadata of {self._topic}: {exc}") from exc
            topic = metadata.topics.get(self._topic)
            if topic is None or topic.error is not None or not topic.partitions:
                raise ConfigurationError(
                    f"topic {self._topic!r} does not exist: create the topics first (sendgate topics create)"
                )
            self._partitions = sorted(topic.partitions)
            self._partitions_read_at = now
        return self._partitions

    def read(self) -> dict[int, int]:
        return self.request()()

    def request(self) -> Callable[[], dict[int, int]]:
        """Send the offsets request now; the returned call waits for the answer.

        The gate overlaps this wait with its state read: both only need to
        start after the batch was consumed.
        """
        request = {TopicPartition(self._topic, p): OffsetSpec.latest() for p in self.partitions()}
        try:
            futures = self._admin.list_offsets(
                request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self._timeout
            )
        except KafkaException as exc:
            raise OffsetsUnavailable(f"end offsets of {self._topic}: {exc}") from exc

        def answer() -> dict[int, int]:
            try:
                return {tp.partition: future.result().offset for tp, future in futures.items()}
            except KafkaException as exc:
                raise OffsetsUnavailable(f"end offsets of {self._topic}: {exc}") from exc

        return answer
