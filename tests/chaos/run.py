"""One fault-injection run: its topics, ledger, workers and progress monitor, all cleaned up after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from tests import harness
from tests.chaos.checker import Verdict, check
from tests.chaos.monitor import ProgressMonitor
from tests.chaos.processes import Workers
from tests.chaos.workload import Audience, EventProducer, Ledger, SendProducer, Traffic
from worker.codec import AvroCodec
from worker.config import KafkaSettings, RedisSettings, Settings
from worker.kafka.admin import create_topics
from worker.state.connection import connect


def with_services(
    settings: Settings,
    *,
    bootstrap: str | None = None,
    redis_url: str | None = None,
    partitions: int | None = None,
    replication_factor: int | None = None,
    **redis_options: object,
) -> Settings:
    """``settings`` pointed at other services and/or with another topic layout."""
    update: dict[str, object] = {}
    if bootstrap is not None:
        update["kafka"] = KafkaSettings(bootstrap_servers=bootstrap)
    if redis_url is not None or redis_options:
        update["redis"] = RedisSettings(url=redis_url or settings.redis.url, **redis_options)  # type: ignore[arg-type]
    topic_update: dict[str, object] = {}
    if partitions is not None:
        topic_update.update(partitions=partitions, preference_partitions=partitions)
    if replication_factor is not None:
        topic_update["replication_factor"] = replication_factor
    if topic_update:
        update["topics"] = settings.topics.model_copy(update=topic_update)
    return settings.model_copy(update=update)


@dataclass
class ChaosRun:
    settings: Settings
    codec: AvroCodec
    ledger: Ledger
    audience: Audience
    traffic: Traffic
    workers: Workers
    log_dir: Path

    def sends(self) -> SendProducer:
        return SendProducer(self.settings, self.codec, self.ledger)

    def events(self) -> EventProducer:
        return EventProducer(self.settings, self.codec, self.ledger)

    def monitor(self, interval: float = 0.25) -> ProgressMonitor:
        return ProgressMonitor(self.settings, interval=interval)

    def setup_preferences(self) -> None:
        """The SMS opt-ins every run starts from (acknowledged before any send)."""
        self.events().emit(self.traffic.setup_events())

    def check(self, **kwargs: object) -> Verdict:
        return check(self.settings, self.ledger, codec=self.codec, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def chaos_run(settings: Settings, log_dir: Path, *, audience_size: int = 2000, seed: int = 1) -> Iterator[ChaosRun]:
    """Creates the run's topics (deleted after) and stops its workers and removes its Redis keys at the end."""
    create_topics(settings)
    ledger = Ledger()
    audience = Audience.create(ledger.run_id, audience_size)
    workers = Workers(settings, log_dir)
    try:
        yield ChaosRun(
            settings=settings,
            codec=AvroCodec.from_settings(settings),
            ledger=ledger,
            audience=audience,
            traffic=Traffic(audience, ledger, seed=seed),
            workers=workers,
            log_dir=log_dir,
        )
    finally:
        workers.close()
        harness.delete_topics(settings.kafka.bootstrap_servers, settings.topics.all_names())
        with contextlib.suppress(redis.RedisError):
            client = connect(settings.redis)  # a cluster client for a cluster: it scans every primary
            harness.delete_redis_keys(client, settings.state.key_prefix)  # type: ignore[arg-type]
            client.close()
