"""The committed end of a topic: what a read_committed consumer can reach.

The gate's freshness barrier compares these offsets of ``preferences.changed``
with the applier's stored progress: a preference event acknowledged by Kafka
lies below them, so progress at or past them means it has been applied.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from worker.errors import ConfigurationError, RetryableError

logger = logging.getLogger(__name__)

PARTITIONS_REFRESH_SECONDS = 30.0
# An answer is waited for this long past the request's own timeout: librdkafka
# should have failed it by then, and a gate blocked on it decides nothing.
ANSWER_MARGIN_SECONDS = 2.0
# After this many requests in a row with no answer the admin client is replaced.
# A stopping single broker can answer metadata with no brokers at all; librdkafka
# then drops the only broker it knows and, without a re-bootstrap (see
# worker/kafka/clients.py), never asks anyone again. A new client bootstraps anew.
UNANSWERED_BEFORE_RENEWAL = 2
# _NOENT ("Failed to query partition leaders: No leaders found"): the client
# knows no leader of any partition, so nobody is even asked. Seen for 16 s after
# a restart (the 17.9 s pause of the 20-restart row) until two silences renewed
# the client; it now counts as one.
UNANSWERED_CODES = {
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._NOENT,
}
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

    def __init__(
        self,
        admin: AdminClient,
        topic: str,
        *,
        timeout_seconds: float = 5.0,
        renew: Callable[[], AdminClient] | None = None,
    ) -> None:
        self._admin = admin
        self._topic = topic
        self._timeout = timeout_seconds
        self._renew = renew
        self._unanswered = 0
        self.renewals = 0
        self._partitions: list[int] = []
        self._partitions_read_at = 0.0

    def partitions(self) -> list[int]:
        now = time.monotonic()
        if not self._partitions or now - self._partitions_read_at > PARTITIONS_REFRESH_SECONDS:
            try:
                metadata = self._admin.list_topics(self._topic, timeout=self._timeout)
            except KafkaException as exc:
                self._note_unanswered()  # list_topics raises only when no broker answered in time
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
                offsets = self._answered(futures)
            except KafkaException as exc:
                if not _stale_leader(exc):
                    raise OffsetsUnavailable(f"end offsets of {self._topic}: {exc}") from exc
                self._refresh_leaders()
                try:
                    offsets = self._answered(self._send())
                except KafkaException as exc:
                    raise OffsetsUnavailable(f"end offsets of {self._topic} (after a metadata refresh): {exc}") from exc
            return offsets

        return answer

    def _answered(self, futures: dict[TopicPartition, Any]) -> dict[int, int]:
        """The answers to ``futures``, counting requests nobody answered and renewing the client after a few in a row."""
        try:
            offsets = self._collect(futures)
        except concurrent.futures.TimeoutError as exc:
            self._note_unanswered()
            raise OffsetsUnavailable(
                f"end offsets of {self._topic}: no answer {self._timeout + ANSWER_MARGIN_SECONDS:g} s after the request"
            ) from exc
        except KafkaException as exc:
            if _code(exc) in UNANSWERED_CODES:
                self._note_unanswered()
            raise
        self._unanswered = 0
        return offsets

    def _note_unanswered(self) -> None:
        self._unanswered += 1
        if self._renew is None or self._unanswered < UNANSWERED_BEFORE_RENEWAL:
            return
        logger.warning(
            "admin client answers no offsets request: replacing it",
            extra={"topic": self._topic, "unanswered_in_a_row": self._unanswered},
        )
        self._admin = self._renew()
        self._partitions = []  # asked of the new client
        self._unanswered = 0
        self.renewals += 1

    def _send(self) -> dict[TopicPartition, Any]:
        request = {TopicPartition(self._topic, p): OffsetSpec.latest() for p in self.partitions()}
        try:
            return self._admin.list_offsets(
                request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self._timeout
            )
        except KafkaException as exc:
            raise OffsetsUnavailable(f"end offsets of {self._topic}: {exc}") from exc

    def _collect(self, futures: dict[TopicPartition, Any]) -> dict[int, int]:
        deadline = time.monotonic() + self._timeout + ANSWER_MARGIN_SECONDS
        return {tp.partition: future.result(timeout=max(0.0, deadline - time.monotonic())).offset for tp, future in futures.items()}

    def _refresh_leaders(self) -> None:
        """A metadata request for the topic: its answer updates the admin client's cached leaders and epochs."""
        try:
            self._admin.list_topics(self._topic, timeout=self._timeout)
        except KafkaException as exc:
            if _code(exc) in UNANSWERED_CODES:
                self._note_unanswered()
            raise OffsetsUnavailable(f"metadata of {self._topic}: {exc}") from exc


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _stale_leader(exc: KafkaException) -> bool:
    return _code(exc) in STALE_LEADER_CODES
