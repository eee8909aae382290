"""librdkafka client configurations for the workers, built from settings."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from worker.config import Settings

# How the gate's clients ride out a broker restart (the operator's extra settings
# still win):
# * no re-bootstrap: librdkafka 2.16 re-bootstraps when every broker it knows is
#   down at once - on a single-node cluster, at every restart - and that now
#   decommissions the learned brokers (librdkafka #5600). The group coordinator
#   cache keeps the decommissioned handle (#5511, fix pending in #5512), so
#   send_offsets_to_transaction waits for a broker that never comes up, past its
#   own timeout (#5456). Without it the broker handles survive and reconnect.
#   The price: a client that loses every broker it knows does not find them
#   again by itself. That happens when a stopping single broker answers a
#   metadata request with no brokers at all (librdkafka then decommissions the
#   only one it knows), or when every broker changed address. Each client is
#   then replaced by a new one, which bootstraps anew: the transactional
#   producer by the watchdog (worker/kafka/transactions.py), the gate consumer
#   when its committed offsets time out (worker/gate/pipeline.py), the
#   barrier's admin client after two unanswered requests (worker/kafka/offsets.py).
# * reconnect backoff capped at 1 s instead of 10 s: after a few refused
#   connections the wait between attempts grows to ~10 s (+50 % jitter), so the
#   transaction coordinator was found up to 15 s after the broker was back.
# Every client a worker waits on needs both, not only the gate's consumer and
# producer: the freshness barrier's admin client (the gate decides nothing
# until it answers) and the applier's rejection producer (flushed before the
# applier moves on, so the gates wait at the barrier meanwhile) kept librdkafka's
# defaults and came back up to 15 s late, failing the gates closed as long.
BROKER_RESTART_RECOVERY: dict[str, Any] = {
    "metadata.recovery.strategy": "none",
    "reconnect.backoff.max.ms": 1000,
}


def consumer_config(settings: Settings, *, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A read_committed consumer that never commits on its own."""
    config = {
        **settings.kafka.common_config(),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 2000,
        "max.poll.interval.ms": 300000,
        "fetch.wait.max.ms": 50,
        "queued.max.messages.kbytes": 65536,
        **BROKER_RESTART_RECOVERY,
    }
    config.update(settings.kafka.extra)  # the operator's word beats our defaults
    config.update(overrides)
    return config


def transactional_producer_config(settings: Settings, *, transactional_id: str) -> dict[str, Any]:
    """One transactional producer per process; linger and batching tuned for throughput."""
    return {
        **settings.kafka.common_config(),
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        "transaction.timeout.ms": settings.gate.transaction_timeout_ms,
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        **BROKER_RESTART_RECOVERY,
        **settings.kafka.extra,
    }


def idempotent_producer_config(settings: Settings) -> dict[str, Any]:
    """A producer that never duplicates nor reorders within a partition."""
    return {
        **settings.kafka.common_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **BROKER_RESTART_RECOVERY,
        **settings.kafka.extra,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    """The workers' admin client (the freshness barrier's end offsets, the applier's targets and lag)."""
    return {**settings.kafka.common_config(), **BROKER_RESTART_RECOVERY, **settings.kafka.extra}


def static_member_config(instance_id: str) -> dict[str, Any]:
    """Static group membership: a restarted instance takes its partitions back without a
    rebalance, and a paused zombie holding the same id is fenced when it resumes."""
    return {"group.instance.id": instance_id}


def make_consumer(settings: Settings, *, group_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id=group_id, **overrides))


def make_producer(config: dict[str, Any]) -> Producer:
    return Producer(config)


def group_coordinator_answers(
    settings: Settings, *, group_id: str, topic: str, partitions: set[int], timeout: float, require_stable: bool = True
) -> bool:
    """Whether a new client, looking the group coordinator up afresh, gets ``group_id``'s committed offsets in time.

    Asked when a worker's own consumer timed out on such a question: if a
    newcomer is answered, the broker serves the group and only that consumer
    lost its coordinator (librdkafka #5511), so it is re-created; if not, the
    broker is not serving the group yet and a new consumer would wait just the
    same. A consumer that never joins (no member id, no instance id) disturbs
    no membership.

    ``require_stable=False`` asks whether the coordinator serves at all: a
    read_committed client's offset fetch asks for stable offsets, and is not
    answered while a transaction holds offsets of those partitions open
    (UNSTABLE_OFFSET_COMMIT, retried until the timeout) - as our own producer's
    does while its commit_transaction blocks.
    """
    isolation = "read_committed" if require_stable else "read_uncommitted"
    probe = Consumer({**consumer_config(settings, group_id=group_id), "isolation.level": isolation, "log_level": 3})
    try:
        probe.committed([TopicPartition(topic, p) for p in sorted(partitions or {0})], timeout=timeout)
        return True
    except KafkaException:
        return False
    finally:
        probe.close()


class MembershipWatch:
    """Tells a consumer left behind by a broker restart from one that merely holds no partition.

    After a broker restart a consumer that lost its partitions can stay
    without a group coordinator while the broker serves everyone else
    (librdkafka #5511): it never rejoins, and its partitions wait for its
    session to expire and a rebalance (43 s once in the 20-restart row). So a
    consumer that has held no partition for ``after_seconds`` asks for a
    committed offset, at most once per interval; if it is not answered but a
    fresh client is, it is the one left behind. A consumer without partitions
    because others hold them all is answered and left alone, and while the
    broker serves nobody a new consumer would wait just the same.
    """

    def __init__(self, settings: Settings, *, group_id: str, topic: str, after_seconds: float, timeout: float) -> None:
        self._settings = settings
        self._group_id = group_id
        self._topic = topic
        self._after_seconds = after_seconds
        self._timeout = timeout
        self._assigned_seen_at = time.monotonic()

    def left_behind(self, consumer: Consumer, *, assigned: bool) -> str | None:
        """Why ``consumer`` is taken for one without a coordinator, or None while it is not."""
        now = time.monotonic()
        if assigned:
            self._assigned_seen_at = now
            return None
        if now - self._assigned_seen_at < self._after_seconds:
            return None
        self._assigned_seen_at = now
        try:
            consumer.committed([TopicPartition(self._topic, 0)], timeout=self._timeout)
        except KafkaException as exc:
            if group_coordinator_answers(
                self._settings, group_id=self._group_id, topic=self._topic, partitions={0}, timeout=self._timeout
            ):
                return str(exc)
        return None
