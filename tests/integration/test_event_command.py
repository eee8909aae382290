"""`sendgate event`: one preference event from the command line."""

from __future__ import annotations

from tests.integration.support import read_committed, run_cli
from worker.codec import AvroCodec


def test_an_event_is_published_with_its_subject_key(kafka_topics):
    code, output = run_cli(kafka_topics, "event", "--org", "org-e", "--type", "contact_unsilenced", "--contact", "c-7")
    assert code == 0, output
    assert "published CONTACT_UNSILENCED" in output
    [message] = read_committed(kafka_topics, kafka_topics.topics.preferences)
    record = AvroCodec.from_settings(kafka_topics).decode("PreferenceEvent", message.value())
    assert message.key() == b"org-e:c-7"
    assert record["type"] == "CONTACT_UNSILENCED" and record["contact_id"] == "c-7" and record["source"] == "API"


def test_an_event_the_applier_would_reject_is_refused_before_it_is_written(kafka_topics):
    code, output = run_cli(kafka_topics, "event", "--org", "org-e", "--type", "CONTACT_SILENCED")
    assert code == 2 and "MISSING_FIELD" in output
    code, output = run_cli(kafka_topics, "event", "--org", "org-e", "--type", "EMAIL_OPT_OUT_ORGANIZATION", "--email", "nope")
    assert code == 2 and "INVALID_ADDRESS" in output
    code, output = run_cli(kafka_topics, "event", "--org", "org-e", "--type", "NOT_A_TYPE")
    assert code == 2
    assert read_committed(kafka_topics, kafka_topics.topics.preferences) == []


def test_an_unreachable_kafka_is_reported_clearly(kafka_topics):
    settings = kafka_topics.model_copy(update={"kafka": kafka_topics.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})})
    code, output = run_cli(settings, "event", "--org", "o", "--type", "CONTACT_SILENCED", "--contact", "c", timeout=60)
    assert code == 15, output
    assert "Kafka did not acknowledge" in output and "Traceback" not in output
