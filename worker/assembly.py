"""Builds the workers from settings: the one place that wires clients together.

Constructors do no network I/O; these factories do, so a command fails early
and clearly when Kafka or Redis cannot be reached.
"""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from worker.codec import AvroCodec
from worker.config import Settings
from worker.gate.freshness import FreshStateReader
from worker.gate.pipeline import Gate
from worker.health import Health
from worker.kafka.clients import (
    admin_config,
    idempotent_producer_config,
    make_consumer,
    static_member_config,
    transactional_producer_config,
)
from worker.kafka.offsets import CommittedEndOffsets
from worker.metrics import Metrics
from worker.preferences.applier import PreferenceApplier
from worker.preferences.rejections import RejectionWriter
from worker.runtime import StopSignal
from worker.state.redis_store import RedisStateStore


@dataclass
class Runtime:
    """What every worker of one process shares."""

    settings: Settings
    metrics: Metrics
    health: Health
    stop: StopSignal
    codec: AvroCodec

    @classmethod
    def create(cls, settings: Settings, *, stop: StopSignal | None = None, metrics: Metrics | None = None) -> Runtime:
        metrics = metrics or Metrics()
        return cls(
            settings=settings,
            metrics=metrics,
            health=Health(metrics),
            stop=stop or StopSignal(),
            codec=AvroCodec.from_settings(settings),
        )

    def admin(self) -> AdminClient:
        return AdminClient(admin_config(self.settings))

    def store(self) -> RedisStateStore:
        return RedisStateStore.from_settings(self.settings.redis, self.settings.state)

    def preference_end_offsets(self) -> CommittedEndOffsets:
        return CommittedEndOffsets(self.admin(), self.settings.topics.preferences, renew=self.admin)


def build_applier(runtime: Runtime) -> PreferenceApplier:
    settings = runtime.settings
    instance_id = applier_instance_id(settings)  # one per applier: every consumer it re-creates keeps it
    return PreferenceApplier(
        settings=settings,
        store=runtime.store(),
        codec=runtime.codec,
        consumer_factory=lambda: make_consumer(
            settings, group_id=settings.preferences.group_id, **static_member_config(instance_id)
        ),
        rejection_writer=RejectionWriter(
            producer=Producer(idempotent_producer_config(settings)),
            codec=runtime.codec,
            topic=settings.topics.rejected,
        ),
        end_offsets=runtime.preference_end_offsets(),
        metrics=runtime.metrics,
        stop=runtime.stop,
        health=runtime.health,
    )


_appliers_built = itertools.count()


def applier_instance_id(settings: Settings) -> str:
    """The applier's static member id: configured, else host name, process id and a count.

    Static, so that after a broker restart the applier's rejoin replaces its
    old membership at once instead of waiting out the session timeout (the
    gates fail closed on the freshness barrier meanwhile). Unique per applier
    by default because several may share a host, a process (tests) and a
    group; in a container the worker is pid 1 and builds one applier, so the
    id is also stable across container restarts.
    """
    if settings.preferences.instance_id:
        return settings.preferences.instance_id
    return f"{socket.gethostname()}-{os.getpid()}-{next(_appliers_built)}"


def gate_transactional_id(settings: Settings) -> str:
    """Stable across restarts of one instance: a restarted gate's ``init_transactions``
    aborts what its crashed predecessor left open at once, instead of leaving the
    partition blocked until the transaction times out. Zombies of *other*
    instances are fenced through the consumer group (KIP-447)."""
    return f"{settings.gate.group_id}-{settings.gate.instance_id}"


def build_gate(runtime: Runtime) -> Gate:
    settings = runtime.settings
    store = runtime.store()
    store.check()

    def consumer() -> Consumer:
        return make_consumer(settings, group_id=settings.gate.group_id, **static_member_config(settings.gate.instance_id))

    def producer() -> Producer:
        return Producer(transactional_producer_config(settings, transactional_id=gate_transactional_id(settings)))

    return Gate(
        settings=settings,
        consumer=consumer(),
        producer=producer(),
        consumer_factory=consumer,
        producer_factory=producer,
        codec=runtime.codec,
        state=FreshStateReader(
            store=store,
            end_offsets=runtime.preference_end_offsets(),
            metrics=runtime.metrics,
            barrier_timeout_seconds=settings.gate.barrier_timeout_seconds,
        ),
        metrics=runtime.metrics,
        health=runtime.health,
        stop=runtime.stop,
    )
