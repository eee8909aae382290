"""Every record type survives a trip through real Kafka: encode, produce, consume, decode."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from worker.codec import AvroCodec
from worker.config import Settings
from worker.models import (
    Category,
    Channel,
    OrgSettings,
    PreferenceEvent,
    PreferenceEventType,
    PreferenceSource,
    SendRequest,
    UnsubscribeScope,
    UserOptOutScope,
)

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_123

SEND_REQUEST = SendRequest(
    message_id="m-1",
    org_id="org-1",
    user_id="user-1",
    contact_id="contact-1",
    channel=Channel.SMS,
    category=Category.TRANSACTIONAL,
    to="+1 415 555 0100",
    from_="+14155550199",
    requested_at=T0,
    campaign_id="c-9",
    payload=b"\x00\x01\xfe",
    attributes={"k": "v", "ü": "ß"},
).to_record()

PREFERENCE_EVENT = PreferenceEvent(
    event_id="e-1",
    org_id="org-1",
    occurred_at=T0 + 1,
    source=PreferenceSource.SYSTEM,
    type=PreferenceEventType.ORG_SETTINGS_CHANGED,
    settings=OrgSettings(UnsubscribeScope.ORGANIZATION, UserOptOutScope.USER),
).to_record()

SUPPRESSED_SEND = {
    "request": SEND_REQUEST,
    "reasons": ["SMS_OPT_OUT", "SMS_NOT_OPTED_IN"],
    "primary_reason": "SMS_OPT_OUT",
    "details": {"sms_opt_out_at": str(T0)},
    "decided_at": T0 + 2,
    "policy_version": "2026-11-1",
    "gate_instance": "gate-a",
}

REJECTED_EVENT = {
    "event": PreferenceEvent(
        event_id="e-2",
        org_id="org-1",
        occurred_at=T0 + 3,
        source=PreferenceSource.CONTACT,
        type=PreferenceEventType.SMS_OPT_OUT,
        phone="+14155550100",
    ).to_record(),
    "raw": None,
    "reason": "SMS_NOT_OPTED_IN",
    "detail": "never opted in",
    "rejected_at": T0 + 4,
}

REJECTED_UNDECODABLE = {
    "event": None,
    "raw": b"\x07garbage",
    "reason": "UNDECODABLE",
    "detail": "bad-magic-byte",
    "rejected_at": T0 + 5,
}


def _consume_all(settings: Settings, topic: str, count: int, timeout: float = 30.0) -> dict[bytes, bytes]:
    """Read ``count`` records of ``topic`` from the beginning of every partition: key → value."""
    consumer = Consumer(
        {
            **settings.kafka.common_config(),
            "group.id": f"roundtrip-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            found[message.key()] = message.value()
        return found
    finally:
        consumer.close()


def test_every_record_type_round_trips_through_kafka(kafka_topics: Settings) -> None:
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    cases = {
        settings.topics.requested: [("SendRequest", SEND_REQUEST)],
        settings.topics.preferences: [("PreferenceEvent", PREFERENCE_EVENT)],
        settings.topics.suppressed: [("SuppressedSend", SUPPRESSED_SEND)],
        settings.topics.rejected: [
            ("RejectedPreferenceEvent", REJECTED_EVENT),
            ("RejectedPreferenceEvent", REJECTED_UNDECODABLE),
        ],
    }
    producer = Producer({**settings.kafka.common_config(), "enable.idempotence": True})
    sent: dict[str, dict[bytes, tuple[str, dict, bytes]]] = {}
    for topic, records in cases.items():
        for index, (name, record) in enumerate(records):
            key = f"{name}-{index}".encode()
            value = codec.encode(name, record)
            producer.produce(topic, key=key, value=value)
            sent.setdefault(topic, {})[key] = (name, record, value)
    assert producer.flush(30) == 0

    for topic, expected in sent.items():
        received = _consume_all(settings, topic, len(expected))
        assert set(received) == set(expected), topic
        for key, (name, record, value) in expected.items():
            assert received[key] == value  # byte-for-byte: the broker does not touch values
            decoded = codec.decode(name, received[key])
            assert decoded == record
            time_fields = [field for field, item in decoded.items() if field.endswith("_at")]
            assert time_fields and all(type(decoded[field]) is int for field in time_fields)
