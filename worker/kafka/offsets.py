"""The committed end of a topic: what a read_committed consumer can reach.

The gate's freshness barrier compares these offsets of ``preferences.changed``
with the applier's stored progress: a preference event acknowledged by Kafka
lies below them, so progress at or past them means it has been applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from worker.errors import ConfigurationError, RetryableError

PARTITIONS_REFRESH_SECONDS = 30.0
# The leader (or its epoch) the admin client has cached is not the broker's:
# every broker restart bumps the leader epochs, and the admin client does not
# refresh its metadata on these by itself soon. After a restart every request
# failed FENCED_LEADER_EPOCH for up to 6.5 s, failing the gate closed each time.
STALE_LEADER_CODES = {
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
}


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
        start after the batch was consumed. An answer naming a stale leader is
        asked again once, right after a metadata refresh (see ``STALE_LEADER_CODES``).
        """
        futures = self._send()

        def answer() -> dict[int, int]:
            try:
                return self._collect(futures)
            except KafkaException as exc:
                if not _stale_leader(exc):
                    raise OffsetsUnavailable(f"end offsets of {self._topic}: {exc}") from exc
            self._refresh_leaders()
            try:
                return self._collect(self._send())
            except KafkaException as exc:
                raise OffsetsUnavailable(f"end offsets of {self._topic} (after a metadata refresh): {exc}") from exc

        return answer

    def _send(self) -> dict[TopicPartition, Any]:
        request = {TopicPartition(self._topic, p): OffsetSpec.latest() for p in self.partitions()}
        try:
            return self._admin.list_offsets(
                request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self._timeout
            )
        except KafkaException as exc:
            raise OffsetsUnavailable(f"end offsets of {self._topic}: {exc}") from exc

    @staticmethod
    def _collect(futures: dict[TopicPartition, Any]) -> dict[int, int]:
        return {tp.partition: future.result().offset for tp, future in futures.items()}

    def _refresh_leaders(self) -> None:
        """A metadata request for the topic: its answer updates the admin client's cached leaders and epochs."""
        try:
            self._admin.list_topics(self._topic, timeout=self._timeout)
        except KafkaException as exc:
            raise OffsetsUnavailable(f"metadata of {self._topic}: {exc}") from exc


def _stale_leader(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() in STALE_LEADER_CODES
