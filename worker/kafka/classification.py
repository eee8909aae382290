"""Which of our error kinds (:mod:`worker.errors`) a librdkafka error is: the one place that decides.

* fenced → :class:`~worker.errors.ProducerFenced` (exit 10);
* fatal → :class:`~worker.kafka.recovery.ProducerFatal`: the gate rebuilds its producer;
* retriable, and no abort required → :class:`~worker.errors.KafkaRetriable`: the same call again;
* anything else → :class:`~worker.errors.TransactionAborted`: abort, rewind, retry.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from worker.errors import KafkaRetriable, ProducerFenced, SendgateError, TransactionAborted
from worker.kafka.recovery import ProducerFatal
from worker.metrics import Metrics

FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The librdkafka error a KafkaException carries, if it carries one."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_fenced(error: KafkaError) -> bool:
    """Another instance took over our transactional id (or group membership)."""
    return error.code() in FENCED_CODES


def is_fatal(error: KafkaError) -> bool:
    """The client that reported ``error`` is dead and must be replaced.

    librdkafka reports some fatal consumer errors (e.g. a static member fenced
    by its successor) as ``_FATAL`` with ``fatal()`` false, so both count.
    """
    return bool(error.fatal()) or error.code() == KafkaError._FATAL


def classify(exc: KafkaException, *, what: str, metrics: Metrics) -> SendgateError:
    """Our error kind for a KafkaException of a transactional producer call, counted by librdkafka's name."""
    error = kafka_error(exc)
    if error is None:
        return TransactionAborted(f"{what}: {exc}")
    metrics.kafka_errors.labels(kind=error.name()).inc()
    if is_fenced(error):
        return ProducerFenced(f"{what}: fenced by a newer instance ({error})")
    if is_fatal(error):
        return ProducerFatal(f"{what}: fatal Kafka error ({error})")
    if error.retriable() and not error.txn_requires_abort():
        return KafkaRetriable(f"{what}: {error}")
    return TransactionAborted(f"{what}: {error}")
