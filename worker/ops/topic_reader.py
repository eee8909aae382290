"""Reading a window of a topic for the operator tools (replay, what-if), and choosing records in it.

A window is every record of a topic from a start time to the end offsets read
when the window is opened: records produced while a tool runs are not part of
it, so a replay never chases its own output. Time filters are exact on a time
field of the record; the broker's timestamp index is only used to skip ahead,
with a margin (``SEEK_SLACK_MS``) for clocks that disagree a little.

Time filters apply to the moment the record is about (documented in the CLI):

* ``sends.suppressed``: ``decided_at`` — when the gate suppressed it, the time
  an operator lines up with a preference change such as an unsilence;
* ``sends.requested``: ``requested_at`` — it has no decision time.

``since`` is inclusive, ``until`` exclusive.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import OffsetSpec

from worker.config import Settings
from worker.errors import ConfigurationError, KafkaFatal, ServiceUnreachable
from worker.kafka.admin import admin_client
from worker.kafka.classification import is_fatal
from worker.kafka.messages import partition_offset

logger = logging.getLogger(__name__)

# How far before ``since`` the timestamp index is asked to start: a record's
# broker timestamp may precede its decided_at/requested_at when clocks differ.
SEEK_SLACK_MS = 5 * 60 * 1000
# Epoch milliseconds below this (1973-03-03) are almost surely epoch seconds.
_MIN_EPOCH_MS = 100_000_000_000
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_DURATION_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


# -- parameters -------------------------------------------------------------
def parse_time(text: str) -> int:
    """Epoch milliseconds from epoch ms digits or ISO-8601 (a naive time or a date is UTC)."""
    value = text.strip()
    if not value:
        raise ValueError("empty time")
    if value.isdigit():
        millis = int(value)
        if millis < _MIN_EPOCH_MS:
            raise ValueError(f"{value!r} looks like epoch seconds: give epoch milliseconds or ISO-8601")
        return millis
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither epoch milliseconds nor an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_duration(text: str) -> int:
    """Milliseconds from ``<n>s|m|h|d`` (e.g. ``30d``); must be positive."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 600s")
    millis = int(match.group(1)) * _DURATION_MS[match.group(2)]
    if millis <= 0:
        raise ValueError("a duration must be positive")
    return millis


if TYPE_CHECKING:
    _MillisParam = click.ParamType[int]  # generic in the click the type checker sees
else:
    _MillisParam = click.ParamType  # and not subscriptable in every click pyproject admits


class TimeParam(_MillisParam):
    """A point in time on the command line (epoch ms or ISO-8601); bad input is a usage error (exit 2)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DurationParam(_MillisParam):
    """A duration on the command line (``30d``, ``12h``, ``90m``, ``600s``), as milliseconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# -- choosing records -----------------------------------------------------------
@dataclass(frozen=True)
class RecordFilter:
    """Which records of a window an operator asked for; an empty set means "any".

    ``matches`` takes the request part of a record (a ``SendRequest`` dict), the
    time the filter applies to and, for suppressed records, the recorded reasons.
    """

    since_ms: int | None = None
    until_ms: int | None = None
    reasons: frozenset[str] = field(default_factory=frozenset)
    orgs: frozenset[str] = field(default_factory=frozenset)
    campaigns: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None and self.since_ms >= self.until_ms:
            raise ValueError("--since must be before --until")

    def matches(self, request: Mapping[str, Any], at_ms: int, reasons: tuple[str, ...] | list[str] = ()) -> bool:
        if self.since_ms is not None and at_ms < self.since_ms:
            return False
        if self.until_ms is not None and at_ms >= self.until_ms:
            return False
        if self.orgs and request.get("org_id") not in self.orgs:
            return False
        if self.campaigns and request.get("campaign_id") not in self.campaigns:
            return False
        # Any of the recorded reasons counts, not only the primary one: a
        # contact both silenced and opted out is found by either reason.
        return not self.reasons or not self.reasons.isdisjoint(reasons)

    def matches_suppressed(self, record: Mapping[str, Any]) -> bool:
        """For a decoded ``SuppressedSend``: the time is ``decided_at``."""
        return self.matches(record["request"], record["decided_at"], record["reasons"])

    def matches_requested(self, record: Mapping[str, Any]) -> bool:
        """For a decoded ``SendRequest``: the time is ``requested_at``; reasons do not apply."""
        return self.matches(record, record["requested_at"])


# -- reading a window -----------------------------------------------------------
# Right after topics are created or leaders move, brokers answer "not leader" or
# "unknown partition" for a moment: worth a few retries, not a failed command.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
}
RETRY_SECONDS = 10.0

T = TypeVar("T")


def transient(exc: BaseException) -> bool:
    """Whether a Kafka error (possibly wrapped by us) is worth retrying for a few seconds."""
    while exc is not None and not isinstance(exc, KafkaException):
        exc = exc.__cause__  # type: ignore[assignment]
    if exc is None:
        return False
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return False
    return error.code() in _TRANSIENT or (error.retriable() and not is_fatal(error))


def with_retries(operation: Callable[[], T], *, seconds: float = RETRY_SECONDS) -> T:
    """Run ``operation``, retrying transient Kafka errors (bounded): a blip is not a failure."""
    deadline = time.monotonic() + seconds
    delay = 0.05
    while True:
        try:
            return operation()
        except Exception as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            logger.info("transient Kafka error, retrying", extra={"error": str(exc)})
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def position(message: Message) -> str:
    """``topic/partition/offset``: how replay names a record in headers and logs."""
    return f"{message.topic()}/{message.partition()}/{message.offset()}"


def check_topics(settings: Settings, names: list[str], *, timeout: float = 5.0) -> None:
    """Fail fast and clearly when Kafka does not answer or a topic is missing."""
    try:
        metadata = admin_client(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ServiceUnreachable(
            f"Kafka unreachable at {settings.kafka.bootstrap_servers} (no answer within {timeout:g} s): {exc.args[0]}"
        ) from exc
    missing = [name for name in names if name not in metadata.topics]
    if missing:
        raise ConfigurationError(f"topic(s) {', '.join(missing)} do not exist: create them first (sendgate topics create)")


class TopicWindow:
    """The records of one topic from ``since_ms`` (minus the slack) to the end offsets at opening.

    ``committed=True`` reads like the gate does (``read_committed``, up to the
    last stable offset); ``False`` reads every record written, up to the high
    watermark (to find our own non-transactional writes even while another
    producer's transaction holds the stable offset back).
    """

    def __init__(
        self, settings: Settings, topic: str, *, since_ms: int | None = None, committed: bool = True, timeout: float = 10.0
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._since_ms = since_ms
        self._committed = committed
        self._timeout = timeout
        self.ranges: dict[int, tuple[int, int]] = {}
        self._consumer: Consumer | None = None

    def open(self) -> TopicWindow:
        admin = admin_client(self._settings)
        try:
            metadata = admin.list_topics(self.topic, timeout=self._timeout)
        except KafkaException as exc:
            raise ServiceUnreachable(f"Kafka unreachable at {self._settings.kafka.bootstrap_servers}: {exc.args[0]}") from exc
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            raise ConfigurationError(f"topic {self.topic} does not exist: create it first (sendgate topics create)")
        partitions = sorted(described.partitions)
        isolation = IsolationLevel.READ_COMMITTED if self._committed else IsolationLevel.READ_UNCOMMITTED
        ends = self._offsets(admin, {p: OffsetSpec.latest() for p in partitions}, isolation)
        if self._since_ms is None:
            starts = self._offsets(admin, {p: OffsetSpec.earliest() for p in partitions}, isolation)
        else:
            seek = OffsetSpec.for_timestamp(max(0, self._since_ms - SEEK_SLACK_MS))
            found = self._offsets(admin, dict.fromkeys(partitions, seek), isolation)
            # -1: no record at or after that time in this partition.
            starts = {p: (offset if offset >= 0 else ends[p]) for p, offset in found.items()}
        self.ranges = {p: (min(starts[p], ends[p]), ends[p]) for p in partitions}
        self._consumer = Consumer(
            {
                **self._settings.kafka.common_config(),
                "group.id": f"sendgate-ops-{uuid.uuid4().hex}",  # assigned, never joined or committed
                "isolation.level": "read_committed" if self._committed else "read_uncommitted",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "logger": logger,
            }
        )
        return self

    @property
    def total(self) -> int:
        """Offsets in the window (an upper bound of its records: transaction markers take offsets too)."""
        return sum(end - start for start, end in self.ranges.values())

    def __enter__(self) -> TopicWindow:
        return self.open() if self._consumer is None else self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __iter__(self) -> Iterator[Message]:
        if self._consumer is None:
            self.open()
        consumer = self._consumer
        assert consumer is not None
        pending = {p for p, (start, end) in self.ranges.items() if start < end}
        if not pending:
            return
        consumer.assign([TopicPartition(self.topic, p, self.ranges[p][0]) for p in sorted(pending)])
        last_progress = time.monotonic()
        while pending:
            messages = consumer.consume(500, 0.2)
            if messages:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self._timeout:
                raise ServiceUnreachable(
                    f"{self.topic}: no record for {self._timeout:g} s before the end of the window "
                    f"(partitions {sorted(pending)} unfinished)"
                )
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        # At the stable offset: transaction markers may fill the rest of the range.
                        partition, offset = partition_offset(message)
                        if offset >= self.ranges[partition][1]:
                            self._finish(partition, pending)
                        continue
                    if is_fatal(error):
                        raise KafkaFatal(f"reading {self.topic}: {error}")
                    logger.warning("consumer error while reading a window", extra={"topic": self.topic, "error": str(error)})
                    continue
                partition, offset = partition_offset(message)
                if partition not in pending:
                    continue
                end = self.ranges[partition][1]
                if offset >= end:
                    self._finish(partition, pending)
                    continue
                if offset + 1 >= end:
                    self._finish(partition, pending)
                yield message

    def _finish(self, partition: int, pending: set[int]) -> None:
        pending.discard(partition)
        if self._consumer is not None:  # stop fetching what lies past the window
            self._consumer.pause([TopicPartition(self.topic, partition)])

    def _offsets(self, admin: Any, request: dict[int, Any], isolation: IsolationLevel) -> dict[int, int]:
        specs = {TopicPartition(self.topic, p): spec for p, spec in request.items()}

        def list_offsets() -> dict[int, int]:
            futures = admin.list_offsets(specs, isolation_level=isolation, request_timeout=self._timeout)
            return {tp.partition: future.result().offset for tp, future in futures.items()}

        try:
            return with_retries(list_offsets)
        except KafkaException as exc:
            raise ServiceUnreachable(f"offsets of {self.topic} unavailable: {exc.args[0]}") from exc
