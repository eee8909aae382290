"""Kafka transaction calls with librdkafka's error classes handled in one place.

* retriable → the same call again (bounded);
* abortable (``txn_requires_abort``) → :class:`TransactionAborted`: the caller
  aborts and rewinds to the committed offsets;
* fenced → :class:`~worker.errors.ProducerFenced` (exit 10); other fatal →
  :class:`~worker.kafka.recovery.ProducerFatal`: the gate rebuilds its producer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, TypeVar

from confluent_kafka import KafkaError, KafkaException

from worker.errors import ExitCode, ProducerFenced, RetryableError
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
WATCHDOG_MARGIN_SECONDS = 10.0


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


def _overran(what: str, limit: float) -> None:
    logger.critical(
        "Kafka call hangs past its timeout: exiting so the supervisor restarts the gate",
        extra={"call": what, "limit_seconds": limit},
    )
    logging.shutdown()
    os._exit(ExitCode.KAFKA_FATAL)


def call_kafka(operation: Callable[[], T], *, what: str, metrics: Metrics, timeout: float | None = None) -> T:
    """Run a transactional producer call, classifying any error it raises.

    With ``timeout`` (the one given to librdkafka), a watchdog ends the process
    (KAFKA_FATAL) if the call, retries included, has not finished
    ``WATCHDOG_MARGIN_SECONDS`` later: after a broker restart librdkafka can
    block in, or keep timing out of, send_offsets_to_transaction (librdkafka
    #5456), and a restarted gate recovers at once (same transactional id,
    static membership) where a stuck one never does.
    """
    watchdog = None
    if timeout is not None:
        watchdog = threading.Timer(timeout + WATCHDOG_MARGIN_SECONDS, _overran, args=(what, timeout))
        watchdog.daemon = True
        watchdog.start()
    try:
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
    finally:
        if watchdog is not None:
            watchdog.cancel()
