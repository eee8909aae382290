"""Writes rejected preference events to ``preferences.rejected`` and makes sure they arrived."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from worker.codec import AvroCodec
from worker.errors import RetryableError
from worker.models import PreferenceEvent, RejectionReason


class RejectionNotDelivered(RetryableError):
    """Kafka did not acknowledge a rejected event; the batch is applied again."""


@dataclass(frozen=True, slots=True)
class Rejection:
    key: bytes | None
    reason: RejectionReason
    detail: str
    event: PreferenceEvent | None = None
    raw: bytes | None = None
    at: tuple[int, int] | None = None  # (partition, offset) of the rejected event in preferences.changed


class RejectionWriter:
    """Produces rejections with an idempotent producer and waits for every acknowledgement.

    Delivery is at least once: a crash between this and the state commit
    re-applies the batch and writes its rejections again (same ``event_id``).
    """

    def __init__(self, *, producer: Producer, codec: AvroCodec, topic: str) -> None:
        self._producer = producer
        self._codec = codec
        self._topic = topic
        self._errors: list[KafkaError] = []

    def write(self, rejections: list[Rejection], *, timeout_seconds: float = 30.0) -> None:
        if not rejections:
            return
        now = int(time.time() * 1000)
        for rejection in rejections:
            value = self._codec.encode(
                "RejectedPreferenceEvent",
                {
                    "event": rejection.event.to_record() if rejection.event is not None else None,
                    "raw": rejection.raw,
                    "reason": rejection.reason.value,
                    "detail": rejection.detail,
                    "rejected_at": now,
                },
            )
            self._producer.produce(self._topic, value=value, key=rejection.key, on_delivery=self._on_delivery)
        remaining = self._producer.flush(timeout_seconds)
        if remaining or self._errors:
            errors, self._errors = self._errors, []
            raise RejectionNotDelivered(
                f"{remaining} rejected events unacknowledged, delivery errors: {[str(e) for e in errors[:3]]}"
            )

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._errors.append(error)
