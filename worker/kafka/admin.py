"""Topic administration: create the six topics of SPEC §5 with the right configs.

Idempotent: an existing topic is reported, never altered (changing the
partition count of a keyed topic would reshuffle keys, so a difference is
reported for a human to decide, not "fixed").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource, NewTopic

from worker.config import Settings
from worker.errors import ConfigurationError, SendgateError, ServiceUnreachable
from worker.kafka.auth import AuthenticationWatch, auth_watch_of, credentials_refused, is_authentication_failure

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
# A metadata request is retried in slices this long, so refused credentials end the wait early.
METADATA_SLICE_SECONDS = 1.0
CREDENTIALS_CHECK_SECONDS = 5.0
_DAY_MS = 24 * 60 * 60 * 1000

TopicStatus = Literal["created", "exists", "exists-different", "missing"]


@dataclass(frozen=True, slots=True)
class TopicReport:
    """What happened to (or was found about) one topic."""

    name: str
    partitions: int
    status: TopicStatus
    # create_topics: the configs we asked for; describe: their values on the broker.
    configs: dict[str, str] = field(default_factory=dict)
    expected_partitions: int | None = None


def topic_plan(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Topic name → (partitions, configs) for the six topics of ``settings``."""
    topics = settings.topics
    # min.insync.replicas above the replication factor would make every acks=all write fail.
    durability = {"min.insync.replicas": str(min(2, topics.replication_factor)), "cleanup.policy": "delete"}

    def retained(days: int) -> dict[str, str]:
        return {**durability, "retention.ms": str(days * _DAY_MS)}

    return {
        topics.requested: (topics.partitions, retained(7)),
        topics.allowed: (topics.partitions, retained(7)),
        topics.suppressed: (topics.partitions, retained(7)),
        # Dead letters and rejections wait for a human: keep them longer.
        topics.dead_letter: (topics.partitions, retained(30)),
        # SPEC §6.4: preferences.changed is the source of truth — never expire it.
        topics.preferences: (
            topics.preference_partitions,
            {**durability, "retention.ms": "-1", "retention.bytes": "-1"},
        ),
        topics.rejected: (topics.preference_partitions, retained(30)),
    }


class WatchedAdminClient(AdminClient):
    """An AdminClient that remembers whether the brokers refused its credentials (``auth_watch``)."""

    def __init__(self, config: dict[str, Any], auth_watch: AuthenticationWatch) -> None:
        super().__init__({**config, **auth_watch.config()})
        self.auth_watch = auth_watch


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient whose librdkafka logs go through our logging, not stderr, and whose
    refused credentials are reported as such (see :mod:`worker.kafka.auth`)."""
    config: dict[str, Any] = dict(settings.kafka.common_config())
    config["logger"] = logger
    return WatchedAdminClient(config, AuthenticationWatch(settings.kafka.bootstrap_servers))


def _metadata(admin: AdminClient, settings: Settings, timeout: float) -> ClusterMetadata:
    """Cluster metadata; refused credentials → :class:`~worker.kafka.auth.KafkaCredentialsRefused`
    (exit 14) as soon as the brokers say so, no answer within ``timeout`` → ServiceUnreachable."""
    watch = auth_watch_of(admin)
    started = time.monotonic()
    deadline = started + timeout
    while True:
        remaining = deadline - time.monotonic()
        attempt = timeout if watch is None else max(0.1, min(remaining, METADATA_SLICE_SECONDS))
        try:
            return admin.list_topics(timeout=attempt)
        except KafkaException as exc:
            if watch is not None:
                admin.poll(0)  # error callbacks are served by poll only
            if is_authentication_failure(exc) or (watch is not None and watch.refused_since(started)):
                raise credentials_refused(settings.kafka.bootstrap_servers) from exc
            if watch is None or time.monotonic() >= deadline:
                raise ServiceUnreachable(
                    f"Kafka at {settings.kafka.bootstrap_servers} did not answer within {timeout:g} s: {exc.args[0]}"
                ) from exc


def create_topics(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> list[TopicReport]:
    """Create the six topics idempotently; one report per topic, in ``settings.topics.all_names()`` order."""
    admin = admin_client(settings)
    existing = _metadata(admin, settings, timeout).topics
    plan = topic_plan(settings)
    reports: dict[str, TopicReport] = {}
    to_create: list[NewTopic] = []
    for name, (partitions, configs) in plan.items():
        if name in existing:
            reports[name] = _existing_report(name, len(existing[name].partitions), partitions, configs)
        else:
            to_create.append(
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=settings.topics.replication_factor,
                    config=configs,
                )
            )
    if to_create:
        futures = admin.create_topics(to_create, operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            partitions, configs = plan[name]
            try:
                future.result()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise _wrap(settings, name, exc) from exc
                # Another process created it between our listing and our request.
                reports[name] = _existing_report(name, _partition_count(admin, name, timeout), partitions, configs)
            else:
                logger.info("created topic %s with %d partitions", name, partitions)
                reports[name] = TopicReport(name, partitions, "created", dict(configs), partitions)
        _wait_until_visible(admin, [topic.topic for topic in to_create], timeout)
    return [reports[name] for name in settings.topics.all_names()]


def describe(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> list[TopicReport]:
    """The six topics as the broker has them: partition counts and the configs we manage."""
    admin = admin_client(settings)
    existing = _metadata(admin, settings, timeout).topics
    plan = topic_plan(settings)
    present = [name for name in plan if name in existing]
    configs = _describe_configs(admin, settings, present, timeout) if present else {}
    reports = []
    for name, (partitions, wanted) in plan.items():
        if name not in existing:
            reports.append(TopicReport(name, 0, "missing", {}, partitions))
            continue
        actual = len(existing[name].partitions)
        status: TopicStatus = "exists" if actual == partitions else "exists-different"
        managed = {key: value for key, value in configs.get(name, {}).items() if key in wanted}
        reports.append(TopicReport(name, actual, status, managed, partitions))
    return reports


def describe_configs(settings: Settings, name: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> dict[str, str]:
    """Every config of one topic as the broker reports it."""
    admin = admin_client(settings)
    _metadata(admin, settings, timeout)
    return _describe_configs(admin, settings, [name], timeout)[name]


def check_credentials(settings: Settings, *, timeout: float = CREDENTIALS_CHECK_SECONDS) -> None:
    """Stop a worker at start (:class:`~worker.kafka.auth.KafkaCredentialsRefused`, exit 14) when SASL is refused.

    A worker waits out an unreachable Kafka (fail closed, not ready), but
    refused credentials never heal by waiting. Only SASL can be refused, so
    without it there is nothing to check; a Kafka that does not answer within
    ``timeout`` is left to the worker's own retries.
    """
    if not settings.kafka.security_protocol.upper().startswith("SASL"):
        return
    try:
        _metadata(admin_client(settings), settings, timeout)
    except ServiceUnreachable as exc:
        logger.warning("Kafka did not answer the start-up credentials check; retrying in the worker", extra={"error": str(exc)})


def delete_topics(settings: Settings, names: list[str], *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> list[str]:
    """Delete ``names`` best effort (tests, demos); returns the names actually deleted."""
    if not names:
        return []
    admin = admin_client(settings)
    _metadata(admin, settings, timeout)
    deleted = []
    for name, future in admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            logger.warning("could not delete topic %s: %s", name, exc.args[0])
        else:
            deleted.append(name)
    return deleted


def _existing_report(name: str, actual: int, expected: int, configs: dict[str, str]) -> TopicReport:
    if actual != expected:
        logger.warning("topic %s exists with %d partitions, settings say %d", name, actual, expected)
        return TopicReport(name, actual, "exists-different", dict(configs), expected)
    return TopicReport(name, actual, "exists", dict(configs), expected)


def _partition_count(admin: AdminClient, name: str, timeout: float) -> int:
    metadata = admin.list_topics(topic=name, timeout=timeout)
    topic = metadata.topics.get(name)
    return len(topic.partitions) if topic is not None else 0


def _describe_configs(
    admin: AdminClient, settings: Settings, names: list[str], timeout: float
) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    result: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = future.result()
        except KafkaException as exc:
            raise _wrap(settings, resource.name, exc) from exc
        result[resource.name] = {key: entry.value for key, entry in entries.items()}
    return result


def _wait_until_visible(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Wait (bounded) until new topics have leaders, so a producer right after us does not miss them."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics
        pending = {
            name
            for name in pending
            if name not in topics
            or topics[name].error is not None
            or any(partition.leader < 0 for partition in topics[name].partitions.values())
        }
        if pending:
            time.sleep(0.1)
    if pending:
        logger.warning("topics not yet visible after %g s: %s", timeout, sorted(pending))


def _wrap(settings: Settings, name: str, exc: KafkaException) -> SendgateError:
    error: KafkaError = exc.args[0]
    if is_authentication_failure(error):
        return credentials_refused(settings.kafka.bootstrap_servers)
    if error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN):
        return ServiceUnreachable(f"Kafka at {settings.kafka.bootstrap_servers} unreachable for {name}: {error}")
    # E.g. a replication factor above the broker count: the settings are wrong for this cluster.
    return ConfigurationError(f"Kafka refused topic {name}: {error}")
