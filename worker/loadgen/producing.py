"""Producing generated records fast: the bulk path the generator, the bench and the tests use.

No per-message Python callback: the producer is polled every few thousand
records and flushed once at the end.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer

from worker.codec import AvroCodec
from worker.config import Settings
from worker.errors import ConfigurationError, RetryableError, ServiceUnreachable
from worker.kafka.clients import idempotent_producer_config
from worker.models import PreferenceEvent, SendRequest
from worker.policy.event_keys import kafka_key

logger = logging.getLogger(__name__)

POLL_EVERY = 5_000
# Records produced per chunk at most (paced: when behind; unpaced: always).
CHUNK_MAX = 1_000
PACE_TOLERANCE_SECONDS = 0.001
FLUSH_TIMEOUT_SECONDS = 120.0


class TrafficNotDelivered(RetryableError):
    """Kafka did not acknowledge every generated record before the flush timed out."""


@dataclass
class ProduceReport:
    """What one ``produce_*`` call wrote: records, bytes, time, and a count per kind."""

    topic: str
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def bulk_producer(settings: Settings) -> Producer:
    """An idempotent producer tuned for bulk: big lz4 batches, a deep local queue."""
    config = idempotent_producer_config(settings)
    config.update(
        {
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": int(FLUSH_TIMEOUT_SECONDS * 1000),
            "error_cb": _log_client_error,
        }
    )
    return Producer(config)


def _log_client_error(error: KafkaError) -> None:
    logger.warning("generator producer error", extra={"error": str(error)})


def require_topics(settings: Settings, topics: Iterable[str], *, timeout: float = 10.0) -> None:
    """Fail clearly before producing into a missing topic (delivery would time out minutes later)."""
    producer = Producer(settings.kafka.common_config())
    try:
        existing = producer.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise ServiceUnreachable(f"Kafka at {settings.kafka.bootstrap_servers} did not answer: {exc.args[0]}") from exc
    missing = sorted(set(topics) - set(existing))
    if missing:
        raise ConfigurationError(f"topics {missing} do not exist: create them first (sendgate topics create)")


def encoded_events(
    events: Iterable[PreferenceEvent], codec: AvroCodec, kinds: collections.Counter[str]
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) per event: the subject key of SPEC §4 and the Avro wire-format value."""
    encode = codec.encode
    for event in events:
        kinds[event.type.value] += 1
        yield kafka_key(event).encode(), encode("PreferenceEvent", event.to_record())


def encoded_sends(
    sends: Iterable[SendRequest], codec: AvroCodec, kinds: collections.Counter[str], *, stamp_now: bool = False
) -> Iterator[tuple[bytes, bytes]]:
    """(message_id, value) per request; ``stamp_now`` sets requested_at to the moment it is encoded."""
    encode = codec.encode
    for request in sends:
        record = request.to_record()
        if stamp_now:
            record["requested_at"] = int(time.time() * 1000)
        kinds[f"{request.channel.value}/{request.category.value}"] += 1
        yield request.message_id.encode(), encode("SendRequest", record)


def produce_encoded(
    producer: Producer,
    topic: str,
    items: Iterable[tuple[bytes, bytes]],
    report: ProduceReport,
    *,
    rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
    flush: bool = True,
) -> ProduceReport:
    """Produce ``items`` at ``rate`` records/s (0: as fast as Kafka takes them).

    Paced items are pulled from the iterator when they are due, so a stamp
    taken while encoding is the send time. The records due by now are pulled
    and produced together (at most a millisecond's worth when on time): the
    pacing costs a clock read per chunk, not per record, and on a 2-core box
    what the load generator spends is taken from the gate it measures.
    """
    started = time.monotonic()
    iterator = iter(items)
    produce = producer.produce
    sent = size = polled = 0
    while True:
        count = _records_due(started, sent, rate) if rate > 0 else CHUNK_MAX
        chunk = list(itertools.islice(iterator, count))
        if not chunk:
            break
        for key, value in chunk:
            try:
                produce(topic, value, key)
            except BufferError:
                _produce_when_queue_frees(producer, topic, key, value)
            size += len(value)
        sent += len(chunk)
        if sent - polled >= POLL_EVERY:
            polled = sent
            producer.poll(0)  # serve delivery events so they do not pile up
            if on_progress is not None:
                on_progress(sent)
    if flush:
        remaining = producer.flush(FLUSH_TIMEOUT_SECONDS)
        if remaining:
            raise TrafficNotDelivered(f"{remaining} records to {topic} not acknowledged within {FLUSH_TIMEOUT_SECONDS:g}s")
    if on_progress is not None:
        on_progress(sent)
    report.records += sent
    report.bytes += size
    report.seconds += time.monotonic() - started
    return report


def _records_due(started: float, sent: int, rate: float) -> int:
    """How many records after the first ``sent`` are due at ``rate`` by now, sleeping first if the next is not.

    A record up to a millisecond ahead of its time counts as due (sleeps
    shorter than that oversleep), and a chunk is capped so a producer that
    fell behind catches up in steps.
    """
    now = time.monotonic()
    delay = started + sent / rate - now
    if delay > PACE_TOLERANCE_SECONDS:
        time.sleep(delay)
        now = time.monotonic()
    due = int((now + PACE_TOLERANCE_SECONDS - started) * rate) + 1 - sent
    return max(1, min(due, CHUNK_MAX))


def _produce_when_queue_frees(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        producer.poll(0.05)  # the local queue is full: let librdkafka send
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            continue


def produce_events(
    settings: Settings,
    events: Iterable[PreferenceEvent],
    *,
    codec: AvroCodec | None = None,
    producer: Producer | None = None,
    rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Produce preference events to ``settings.topics.preferences``, keyed per SPEC §4."""
    topic = settings.topics.preferences
    report = ProduceReport(topic)
    items = encoded_events(events, codec or AvroCodec.from_settings(settings), report.kinds)
    return produce_encoded(producer or bulk_producer(settings), topic, items, report, rate=rate, on_progress=on_progress)


def produce_sends(
    settings: Settings,
    sends: Iterable[SendRequest],
    *,
    codec: AvroCodec | None = None,
    producer: Producer | None = None,
    rate: float = 0.0,
    stamp_now: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Produce send requests to ``settings.topics.requested``, keyed by message_id."""
    topic = settings.topics.requested
    report = ProduceReport(topic)
    items = encoded_sends(sends, codec or AvroCodec.from_settings(settings), report.kinds, stamp_now=stamp_now)
    return produce_encoded(producer or bulk_producer(settings), topic, items, report, rate=rate, on_progress=on_progress)
