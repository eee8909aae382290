"""``sendgate generate`` against real Kafka: the requested counts, keys and values, bad arguments."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.support import read_committed, settings_env
from worker.codec import AvroCodec
from worker.loadgen.streams import generate_events
from worker.loadgen.world import World
from worker.models import PreferenceEvent
from worker.policy.event_keys import kafka_key

BASE_MS = 1_790_000_000_000


def sendgate(settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], env=settings_env(settings), capture_output=True, text=True, timeout=timeout
    )


def test_generate_produces_the_requested_counts_keyed_per_spec(kafka_topics):
    settings = kafka_topics
    result = sendgate(
        settings, "generate", "--orgs", "3", "--contacts", "300", "--events", "400", "--sends", "500",
        "--seed", "11", "--base-time-ms", str(BASE_MS),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    codec = AvroCodec.from_settings(settings)

    events = read_committed(settings, settings.topics.preferences)
    assert len(events) == 400
    decoded = {}
    for message in events:
        event = PreferenceEvent.from_record(codec.decode("PreferenceEvent", message.value()))
        assert message.key() == kafka_key(event).encode()
        decoded[event.event_id] = event
    # The command's events are the API's for the same seed and time.
    expected = generate_events(World(seed=11, orgs=3, contacts=300), 400, seed=11, base_time_ms=BASE_MS)
    assert decoded == {event.event_id: event for event in expected}

    sends = read_committed(settings, settings.topics.requested)
    assert len(sends) == 500
    for message in sends:
        assert message.key().decode() == codec.decode("SendRequest", message.value())["message_id"]
    assert "total" in result.stdout and "seed 11" in result.stdout


def test_generate_only_sends_at_a_rate(kafka_topics):
    settings = kafka_topics
    result = sendgate(settings, "generate", "--what", "sends", "--sends", "60", "--rate", "200", "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(read_committed(settings, settings.topics.requested)) == 60
    assert read_committed(settings, settings.topics.preferences) == []


def test_generate_into_missing_topics_fails_clearly(settings):
    result = sendgate(settings, "generate", "--events", "5", "--sends", "5")
    assert result.returncode == 14, result.stdout + result.stderr  # ExitCode.CONFIG
    assert "sendgate topics create" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--events", "-1"),
        ("--what", "everything"),
        ("--orgs", "10", "--contacts", "5"),
    ],
)
def test_bad_arguments_exit_2(settings, args):
    result = sendgate(settings, "generate", *args)
    assert result.returncode == 2, result.stdout + result.stderr
