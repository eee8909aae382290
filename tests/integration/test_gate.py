"""The gate end to end against real Kafka and Redis."""

from __future__ import annotations

from tests.integration.support import (
    headers_of,
    now_ms,
    preference_event,
    produce_events,
    produce_raw,
    produce_sends,
    producer,
    running_applier,
    running_gate,
    send_request,
    wait_for_outputs,
)
from worker.codec import AvroCodec
from worker.loadgen.scenario import build_scenario
from worker.models import PreferenceEventType as T


def test_a_scenario_covering_every_reason_is_split_as_spec_requires(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    scenario = build_scenario(base_time_ms=now_ms())
    produce_events(settings, codec, scenario.events)
    values = produce_sends(settings, codec, [s.request for s in scenario.sends])
    with running_applier(settings), running_gate(settings):
        outputs = wait_for_outputs(settings, len(scenario.sends))
    expected = {s.request.message_id: s for s in scenario.sends}
    sent_value = {s.request.message_id: v for s, v in zip(scenario.sends, values, strict=True)}

    assert outputs.dead_letter == []
    allowed_ids = set()
    for message in outputs.allowed:
        message_id = message.key().decode()
        allowed_ids.add(message_id)
        assert message.value() == sent_value[message_id], "allowed values are the input bytes"
        headers = headers_of(message)
        assert headers["sendgate-decision"] == "ALLOWED"
        assert headers["sendgate-policy-version"] == settings.gate.policy_version
        assert int(headers["sendgate-decided-at"]) > 0 and headers["sendgate-state"].startswith("gen=")
    assert allowed_ids == {i for i, s in expected.items() if s.expected_allowed}

    suppressed = {m.key().decode(): codec.decode("SuppressedSend", m.value()) for m in outputs.suppressed}
    assert set(suppressed) == {i for i, s in expected.items() if not s.expected_allowed}
    for message_id, record in suppressed.items():
        scripted = expected[message_id]
        assert tuple(record["reasons"]) == tuple(r.value for r in scripted.expected_reasons), scripted.story
        assert record["primary_reason"] == scripted.expected_reasons[0].value
        assert record["request"]["message_id"] == message_id
        assert record["details"]["state"].startswith("gen=")
        assert record["gate_instance"] == settings.gate.instance_id

    bypassed = {m.key().decode(): headers_of(m).get("sendgate-bypassed") for m in outputs.allowed}
    transactional_past_opt_out = next(s for s in scenario.sends if s.story.startswith("transactional email ignores"))
    assert bypassed[transactional_past_opt_out.request.message_id] == "EMAIL_OPT_OUT_ORGANIZATION"
    assert bypassed[scenario.sends[0].request.message_id] is None


def test_no_stale_allow_after_an_acknowledged_opt_out(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    rounds = 500
    p = producer(settings)
    with running_applier(settings), running_gate(settings):
        for i in range(rounds):
            address = f"stale-{i}@example.com"
            produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email=address)], p)
            produce_sends(settings, codec, [send_request(to=address, message_id=f"stale-{i}")], p)
        outputs = wait_for_outputs(settings, rounds, timeout=120)
    assert len(outputs.suppressed) == rounds
    assert outputs.allowed == []


def poison_values(codec: AvroCodec) -> dict[str, bytes]:
    """One value per kind of bad input, keyed by the error class the dead letter must name."""
    valid = codec.encode("SendRequest", send_request().to_record())
    return {
        "bad-magic-byte": b"\x07" + valid[1:],
        "unknown-schema-id": b"\x00\x00\x00\x03\xe7" + valid[5:],
        "truncated": valid[: len(valid) // 2],
        "malformed-avro": valid + b"trailing garbage",
        "schema-mismatch": codec.encode("PreferenceEvent", preference_event(T.SMS_OPT_IN, phone="+14155550100").to_record()),
        "empty-value": b"",
    }


def test_poison_input_is_dead_lettered_and_its_neighbours_decided(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    poison = poison_values(codec)
    items: list[tuple[bytes | None, bytes | None]] = []
    good = []
    for name, value in poison.items():
        request = send_request(message_id=f"before-{name}", to="fine@example.com")
        good.append(request)
        items.append((request.message_id.encode(), codec.encode("SendRequest", request.to_record())))
        items.append((f"poison-{name}".encode(), value))
    items.append((b"after", codec.encode("SendRequest", send_request(message_id="after", to="fine@example.com").to_record())))
    produce_raw(settings, settings.topics.requested, items)
    with running_applier(settings), running_gate(settings):
        outputs = wait_for_outputs(settings, len(items))
    assert len(outputs.allowed) == len(good) + 1
    assert len(outputs.dead_letter) == len(poison)
    by_key = {m.key().decode(): m for m in outputs.dead_letter}
    for name, value in poison.items():
        message = by_key[f"poison-{name}"]
        headers = headers_of(message)
        assert message.value() == value
        assert headers["sendgate-error-class"] == name
        assert headers["sendgate-source-topic"] == settings.topics.requested
        assert headers["sendgate-source-partition"].isdigit() and headers["sendgate-source-offset"].isdigit()
        assert headers["sendgate-error-detail"]
