"""Kafka transaction calls with librdkafka's error classes handled in one place.

* retriable → the same call again (bounded);
* abortable (``txn_requires_abort``) → :class:`TransactionAborted`: the caller
  aborts and rewinds to the committed offsets;
* fenced → :class:`~worker.errors.ProducerFenced` (exit 10); other fatal →
  :class:`~worker.kafka.recovery.ProducerFatal`: the gate rebuilds its producer.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypeVar

from confluent_kafka import KafkaError, KafkaException

from worker.errors import ProducerFenced, RetryableError
from worker.kafka.recovery import ProducerFatal
from worker.metrics import Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

FENCED_CODES = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}
MAX_RETRIES = 20
# A hung call is abandoned this long after its own timeout. Short, because
# while it hangs the gate decides nothing, and the cure (a rebuilt producer,
# about 0.3 s) is cheap; a healthy call finishes in milliseconds.
WATCHDOG_MARGIN_SECONDS = 2.0


class TransactionAborted(RetryableError):
    """The open transaction must be aborted; its input is processed again."""


def classify(exc: KafkaException, *, what: str, metrics: Metrics) -> Exception:
    """Our error for a KafkaException: fenced, fatal, aborted, or :class:`RetriableKafkaError`."""
    error: KafkaError = exc.args[0]
    metrics.kafka_errors.labels(kind=error.name()).inc()
    if error.code() in FENCED_CODES:
        return ProducerFenced(f"{what}: fenced by a newer instance ({error})")
    if error.fatal():
        return ProducerFatal(f"{what}: fatal Kafka error ({error})")
    if error.retriable() and not error.txn_requires_abort():
        return RetriableKafkaError(f"{what}: {error}")
    return TransactionAborted(f"{what}: {error}")


class RetriableKafkaError(Exception):
    """The same call may simply be made again (never raised out of :func:`call_kafka`)."""


def call_kafka(operation: Callable[[], T], *, what: str, metrics: Metrics, timeout: float | None = None) -> T:
    """Run a transactional producer call, classifying any error it raises.

    With ``timeout`` (the one given to librdkafka), the call, retries
    included, runs in a helper thread, and is abandoned if it has not finished
    ``WATCHDOG_MARGIN_SECONDS`` later: after a broker restart librdkafka can
    block in, or keep timing out of, send_offsets_to_transaction past its own
    timeout (librdkafka #5456). Abandoning raises :class:`ProducerFatal`: the
    gate rebuilds its producer, whose ``init_transactions`` fences the stuck
    one, so whatever the stuck call does later can never commit anything.
    """
    if timeout is None:
        return _with_retries(operation, what=what, metrics=metrics)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def attempt() -> None:
        try:
            outcome["value"] = _with_retries(operation, what=what, metrics=metrics)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=attempt, name=f"sendgate-{what}", daemon=True).start()
    limit = timeout + WATCHDOG_MARGIN_SECONDS
    if not done.wait(limit):
        metrics.kafka_errors.labels(kind="CALL_HUNG").inc()
        logger.error("Kafka call hangs past its timeout: abandoning the producer", extra={"call": what, "limit_seconds": timeout})
        raise ProducerFatal(f"{what}: still blocked {limit:g} s into a call with a {timeout:g} s timeout (librdkafka #5456)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _with_retries(operation: Callable[[], T], *, what: str, metrics: Metrics) -> T:
    for attempt in range(MAX_RETRIES):
        try:
            return operation()
        except KafkaException as exc:
            classified = classify(exc, what=what, metrics=metrics)
            if not isinstance(classified, RetriableKafkaError):
                raise classified from exc
            logger.warning("retrying Kafka call", extra={"call": what, "error": str(classified), "attempt": attempt + 1})
            time.sleep(min(0.05 * 2**attempt, 2.0))
    raise TransactionAborted(f"{what}: still failing after {MAX_RETRIES} retries")
