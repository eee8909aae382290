"""Kafka transaction calls, retried and classified (:mod:`worker.kafka.classification`).

* retriable → the same call again (bounded);
* abortable (``txn_requires_abort``) → :class:`~worker.errors.TransactionAborted`:
  the caller aborts and rewinds to the committed offsets;
* fenced → :class:`~worker.errors.ProducerFenced` (exit 10); other fatal →
  :class:`~worker.kafka.recovery.ProducerFatal`: the gate rebuilds its producer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaException

from worker.config import GateSettings
from worker.errors import KafkaRetriable, TransactionAborted
from worker.kafka.classification import classify
from worker.kafka.recovery import ProducerFatal
from worker.metrics import Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")


def commit_due(gate: GateSettings, *, opened_at: float, records: int, caught_up: bool) -> bool:
    """Whether an open transaction of ``records`` input records, begun at ``opened_at`` (monotonic), is committed now.

    On count or interval, and (``commit_when_caught_up``) as soon as nothing
    is waiting: an idle loop that keeps its transaction open only adds the
    rest of the interval to every record's latency, while a loop with a
    backlog is never caught up, so its transactions stay as large as before.
    """
    if records >= gate.commit_every_messages or time.monotonic() - opened_at >= gate.commit_interval_seconds:
        return True
    return caught_up and gate.commit_when_caught_up

MAX_RETRIES = 20
# A hung call is abandoned this long after its own timeout. Short, because
# while it hangs the gate decides nothing, and the cure (a rebuilt producer,
# about 0.3 s) is cheap; a healthy call finishes in milliseconds.
WATCHDOG_MARGIN_SECONDS = 2.0
# A call still blocked this long is put to ``stuck_if`` (a fresh client's
# question to the broker), then again every interval while it blocks; once
# that is answered, the broker serves, and a call still blocked the grace
# later waits for nothing. Half a second each: a healthy call takes
# milliseconds, and a wrong abandon costs one rebuild (about 0.3 s), while
# each second of waiting on a hung call is a second of every partition's pause.
STUCK_PROBE_AFTER_SECONDS = 0.5
STUCK_PROBE_INTERVAL_SECONDS = 0.5
STUCK_GRACE_SECONDS = 0.5


def call_kafka(
    operation: Callable[[], T],
    *,
    what: str,
    metrics: Metrics,
    timeout: float | None = None,
    stuck_if: Callable[[], bool] | None = None,
) -> T:
    """Run a transactional producer call, classifying any error it raises.

    With ``timeout`` (the one given to librdkafka), the call, retries
    included, runs in a helper thread, and is abandoned if it has not finished
    ``WATCHDOG_MARGIN_SECONDS`` later: after a broker restart librdkafka can
    block in, or keep timing out of, send_offsets_to_transaction past its own
    timeout (librdkafka #5456). Abandoning raises :class:`ProducerFatal`: the
    gate rebuilds its producer, whose ``init_transactions`` fences the stuck
    one, so whatever the stuck call does later can never commit anything.

    With ``stuck_if`` as well, a call blocked past ``STUCK_PROBE_AFTER_SECONDS``
    is abandoned ``STUCK_GRACE_SECONDS`` after ``stuck_if()`` first says a
    fresh client is served. In a 20-restart run all three gates' first
    send_offsets_to_transaction after a restart hung its whole 7 s while the
    broker served everyone (a 10.7 s pause), and a commit_transaction begun
    while the broker was down blocked 12 s after it was back (its 20 s
    timeout), so its consumer's death notice waited as long (a 12.6 s pause).
    """
    if timeout is None:
        return _with_retries(operation, what=what, metrics=metrics)
    values: list[T] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def attempt() -> None:
        try:
            values.append(_with_retries(operation, what=what, metrics=metrics))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=attempt, name=f"sendgate-{what}", daemon=True).start()
    started = time.monotonic()
    limit = timeout + WATCHDOG_MARGIN_SECONDS
    if stuck_if is not None:
        _abandon_if_stuck(done, stuck_if, started=started, limit=limit, what=what, metrics=metrics)
    if not done.wait(max(0.0, limit - (time.monotonic() - started))):
        _abandon(what, metrics, f"still blocked {limit:g} s into a call with a {timeout:g} s timeout")
    if errors:
        raise errors[0]
    return values[0]


def _abandon_if_stuck(
    done: threading.Event, stuck_if: Callable[[], bool], *, started: float, limit: float, what: str, metrics: Metrics
) -> None:
    """Return when the call is done or near its limit; raise once it outlives a fresh client's answer by the grace."""
    answered_at: float | None = None
    wait = STUCK_PROBE_AFTER_SECONDS
    while not done.wait(min(wait, max(0.0, limit - (time.monotonic() - started)))):
        now = time.monotonic()
        if now - started >= limit:
            return
        if answered_at is not None and now - answered_at >= STUCK_GRACE_SECONDS:
            _abandon(what, metrics, f"blocked {now - started:.1f} s, {now - answered_at:.1f} s after a fresh client was answered")
        if answered_at is None and stuck_if():
            answered_at = time.monotonic()
        # Once answered, what is left of the grace: a wake-up a hair early must not cost another whole grace.
        grace_left = None if answered_at is None else max(0.0, answered_at + STUCK_GRACE_SECONDS - time.monotonic())
        wait = STUCK_PROBE_INTERVAL_SECONDS if grace_left is None else grace_left


def _abandon(what: str, metrics: Metrics, why: str) -> None:
    metrics.kafka_errors.labels(kind="CALL_HUNG").inc()
    logger.error("Kafka call hangs: abandoning the producer", extra={"call": what, "why": why})
    raise ProducerFatal(f"{what}: {why} (librdkafka #5456)")


def _with_retries(operation: Callable[[], T], *, what: str, metrics: Metrics) -> T:
    for attempt in range(MAX_RETRIES):
        try:
            return operation()
        except KafkaException as exc:
            classified = classify(exc, what=what, metrics=metrics)
            if not isinstance(classified, KafkaRetriable):
                raise classified from exc
            logger.warning("retrying Kafka call", extra={"call": what, "error": str(classified), "attempt": attempt + 1})
            time.sleep(min(0.05 * 2**attempt, 2.0))
    raise TransactionAborted(f"{what}: still failing after {MAX_RETRIES} retries")
