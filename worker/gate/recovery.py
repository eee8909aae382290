"""The gate's side of in-process Kafka recovery (see :mod:`worker.kafka.recovery`).

Two questions need a broker round trip, so they live here rather than in the
run loop:

* a rebuilt producer is usable only once ``init_transactions`` has returned:
  that bumps the epoch of our transactional id, so the coordinator first
  finishes (aborts, or completes a commit already decided) whatever the dead
  producer left open, and fences the dead producer for good;
* a consumer "fenced by other consumer with same group.instance.id" may have
  been fenced by its own earlier join (broker restart) or by a genuinely
  different live process started with our instance id. Such a process has our
  transactional id too, and its ``init_transactions`` (which a gate calls
  before it subscribes) has fenced our producer: one transactional round trip
  tells the two apart.
"""

from __future__ import annotations

import contextlib
import logging
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from worker.config import Settings
from worker.errors import KafkaRetriable, ProducerFenced, TransactionAborted
from worker.kafka.classification import classify
from worker.kafka.clients import consumer_config, group_coordinator_answers
from worker.kafka.recovery import ProducerFatal
from worker.kafka.transactions import call_kafka
from worker.metrics import Metrics
from worker.runtime import StopSignal

logger = logging.getLogger(__name__)

INIT_ATTEMPT_SECONDS = 10.0
INIT_DEADLINE_SECONDS = 120.0
PROBE_TIMEOUT_SECONDS = 5.0


def init_transactions_until_ready(producer: Producer, *, metrics: Metrics, stop: StopSignal) -> None:
    """``init_transactions``, tried again after each timeout for up to ``INIT_DEADLINE_SECONDS``.

    After a broker restart the transaction coordinator may still be loading;
    each attempt is bounded by its own timeout (librdkafka allows calling it
    again after a timeout), so no watchdog is needed here.

    A fence on this first call is not another instance's doing: a fresh
    InitProducerId always gets the newest epoch, so no zombie can outrank it
    (a zombie is fenced by it, and a later zombie init fences us in a
    transactional call, which still exits 10). After a broker restart the
    broker once answered a brand-new producer "a newer producer with the same
    transactionalId" while our abandoned one still retried in its thread: it
    stopped two gates (exit 10) in a 20-restart run. The handle is dead
    either way, so it is reported as :class:`ProducerFatal` and another
    producer is built, within the rebuild budget.
    """
    deadline = time.monotonic() + INIT_DEADLINE_SECONDS
    attempt = 0
    while not stop.is_set:
        try:
            producer.init_transactions(INIT_ATTEMPT_SECONDS)
            return
        except KafkaException as exc:
            classified = classify(exc, what="init_transactions (rebuilt producer)", metrics=metrics)
            if isinstance(classified, ProducerFenced):
                raise ProducerFatal(f"{classified} on its first init_transactions: building another") from exc
            if not isinstance(classified, (KafkaRetriable, TransactionAborted)) or time.monotonic() >= deadline:
                raise classified from exc
            attempt += 1
            logger.warning("rebuilt producer not initialised yet; trying again", extra={"attempt": attempt, "error": str(classified)})
            stop.wait(0.5)


def coordinator_answers_others(settings: Settings, *, partitions: set[int], timeout: float, require_stable: bool = True) -> bool:
    """:func:`~worker.kafka.clients.group_coordinator_answers` for the gates' group and input topic."""
    return group_coordinator_answers(
        settings,
        group_id=settings.gate.group_id,
        topic=settings.topics.requested,
        partitions=partitions,
        timeout=timeout,
        require_stable=require_stable,
    )


def raise_if_producer_fenced(
    producer: Producer, *, settings: Settings, partitions: set[int], metrics: Metrics
) -> None:
    """Raise :class:`~worker.errors.ProducerFenced` if another instance took our transactional id; else return.

    An empty transaction that sends the committed offsets (unchanged) and is
    aborted: AddOffsetsToTxn carries our producer epoch, so a fenced producer
    learns it. The group metadata comes from a consumer that never joins (no
    member id, no generation, no instance id), which the group coordinator
    accepts without checking membership. A probe that cannot finish (the
    broker is still coming back) proves nothing: it is logged and the caller
    goes on, bounded by its recovery budget.
    """
    topic = settings.topics.requested
    probe = Consumer({**consumer_config(settings, group_id=settings.gate.group_id), "log_level": 3})
    try:
        asked = [TopicPartition(topic, p) for p in sorted(partitions or {0})]
        committed = probe.committed(asked, timeout=PROBE_TIMEOUT_SECONDS)
        offsets = [TopicPartition(topic, tp.partition, max(tp.offset, 0)) for tp in committed]
        group = probe.consumer_group_metadata()
    except KafkaException as exc:
        logger.warning("fence probe could not read committed offsets: assuming not fenced", extra={"error": str(exc)})
        probe.close()
        return
    try:
        call_kafka(producer.begin_transaction, what="begin_transaction (fence probe)", metrics=metrics)
        try:
            call_kafka(
                lambda: producer.send_offsets_to_transaction(offsets, group, PROBE_TIMEOUT_SECONDS),
                what="send_offsets_to_transaction (fence probe)",
                metrics=metrics,
                timeout=PROBE_TIMEOUT_SECONDS,
            )
        except TransactionAborted as exc:
            logger.warning("fence probe inconclusive: assuming not fenced", extra={"cause": str(exc)})
        finally:
            with contextlib.suppress(TransactionAborted):
                call_kafka(
                    lambda: producer.abort_transaction(PROBE_TIMEOUT_SECONDS * 2),
                    what="abort_transaction (fence probe)",
                    metrics=metrics,
                    timeout=PROBE_TIMEOUT_SECONDS * 2,
                )
    finally:
        probe.close()
