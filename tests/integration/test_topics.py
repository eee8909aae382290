"""Topic creation against a real broker: idempotent, right configs, clear failure when unreachable."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from worker.config import Settings
from worker.errors import ServiceUnreachable
from worker.kafka.admin import create_topics, delete_topics, describe, describe_configs

pytestmark = pytest.mark.integration

WEEK_MS = str(7 * 24 * 3600 * 1000)
MONTH_MS = str(30 * 24 * 3600 * 1000)


def test_create_twice_reports_exists(settings: Settings) -> None:
    names = settings.topics.all_names()
    try:
        first = create_topics(settings)
        assert [report.name for report in first] == names
        assert {report.status for report in first} == {"created"}
        second = create_topics(settings)
        assert [(report.name, report.status) for report in second] == [(name, "exists") for name in names]
        partitions = {report.name: report.partitions for report in second}
        assert partitions[settings.topics.requested] == settings.topics.partitions
        assert partitions[settings.topics.preferences] == settings.topics.preference_partitions
        assert partitions[settings.topics.rejected] == settings.topics.preference_partitions
        assert {report.status for report in describe(settings)} == {"exists"}
    finally:
        delete_topics(settings, names)


def test_topic_configs(kafka_topics: Settings) -> None:
    topics = kafka_topics.topics
    preferences = describe_configs(kafka_topics, topics.preferences)
    assert preferences["retention.ms"] == "-1"
    assert preferences["retention.bytes"] == "-1"
    assert preferences["cleanup.policy"] == "delete"
    assert preferences["min.insync.replicas"] == str(min(2, topics.replication_factor))
    for name in (topics.requested, topics.allowed, topics.suppressed):
        assert describe_configs(kafka_topics, name)["retention.ms"] == WEEK_MS
    for name in (topics.dead_letter, topics.rejected):
        assert describe_configs(kafka_topics, name)["retention.ms"] == MONTH_MS


def test_different_partition_count_is_reported_not_fatal(settings: Settings) -> None:
    names = settings.topics.all_names()
    different = settings.topics.partitions + 1
    admin = AdminClient(settings.kafka.common_config())
    admin.create_topics([NewTopic(settings.topics.allowed, num_partitions=different, replication_factor=1)])[
        settings.topics.allowed
    ].result()
    try:
        reports = {report.name: report for report in create_topics(settings)}
        assert reports[settings.topics.allowed].status == "exists-different"
        assert reports[settings.topics.allowed].partitions == different
        assert reports[settings.topics.allowed].expected_partitions == settings.topics.partitions
        assert all(reports[name].status == "created" for name in names if name != settings.topics.allowed)
    finally:
        delete_topics(settings, names)


def test_unreachable_kafka_fails_fast_and_clearly(settings: Settings) -> None:
    nowhere = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})}
    )
    started = time.monotonic()
    with pytest.raises(ServiceUnreachable, match=r"127\.0\.0\.1:1"):
        create_topics(nowhere, timeout=2)
    assert time.monotonic() - started < 6
