"""The gate's guarantees under faults: SIGKILL restarts and a Redis outage."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from tests.integration.support import (
    preference_event,
    produce_events,
    produce_sends,
    read_outputs,
    running_applier,
    running_gate,
    send_request,
    start_cli,
    free_port,
    start_redis,
    wait_for_outputs,
    wait_until,
)
from worker.codec import AvroCodec
from worker.config import RedisSettings
from worker.models import PreferenceEventType as T


def message_ids(outputs) -> Counter:
    ids: Counter = Counter()
    for message in outputs.allowed + outputs.suppressed + outputs.dead_letter:
        ids[message.key().decode()] += 1
    return ids


OPTED_OUT = frozenset(f"person{i}@example.com" for i in range(0, 1000, 5))


def opt_outs_and_requests(settings, codec: AvroCodec, total: int) -> list:  # type: ignore[no-untyped-def]
    """Opts out every fifth of 1,000 addresses; returns ``total`` requests over all of them (not yet produced)."""
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email=a) for a in OPTED_OUT])
    return [send_request(message_id=f"m{i}", to=f"person{i % 1000}@example.com") for i in range(total)]


def assert_exactly_once(outputs, requests: list) -> None:  # type: ignore[no-untyped-def]
    counts = message_ids(outputs)
    lost = len(requests) - len(counts)
    duplicated = [m for m, n in counts.items() if n > 1]
    assert lost == 0 and duplicated == [], f"lost={lost} duplicated={len(duplicated)}"
    suppressed = {m.key().decode() for m in outputs.suppressed}
    assert [r.message_id for r in requests if r.to in OPTED_OUT and r.message_id not in suppressed] == [], "wrongly allowed"


def test_every_record_is_decided_exactly_once_across_sigkill_restarts(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    total = 150_000  # enough that a faster gate is still mid-stream at the fifth kill
    requests = opt_outs_and_requests(settings, codec, total)
    produce_sends(settings, codec, requests)
    rng = random.Random(7)
    kills = 0
    with running_applier(settings):
        while kills < 5:
            gate = start_cli(settings, "gate")
            time.sleep(rng.uniform(2.0, 4.0))
            if gate.poll() is not None:
                pytest.fail(f"gate exited early: {gate.output()[-3000:]}")
            gate.kill()
            gate.close()
            kills += 1
        decided_before_last_start = read_outputs(settings).total()
        print(f"decided when the fifth gate was killed: {decided_before_last_start} of {total}")
        assert 0 < decided_before_last_start < total, "the kills must land while records are being decided"
        final = start_cli(settings, "gate")
        try:
            outputs = wait_for_outputs(settings, total, timeout=240)
            assert final.terminate() == 0, final.output()[-3000:]
        finally:
            final.close()
    assert_exactly_once(outputs, requests)


def test_every_record_is_decided_exactly_once_while_a_second_gate_joins_and_leaves(kafka_topics):
    """A rebalance revokes partitions while a batch is in flight (read sent, nothing produced yet).

    The gate must drop that batch and consume it again from the committed
    offsets: dropping without rewinding loses it, finishing it after the
    revoke duplicates it.
    """
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    total = 60_000
    requests = opt_outs_and_requests(settings, codec, total)

    def trickle() -> None:  # ~3,000/s for 20 s: the gates are deciding whenever the group rebalances
        for start in range(0, total, 600):
            produce_sends(settings, codec, requests[start : start + 600])
            time.sleep(0.2)

    with running_applier(settings):
        sender = threading.Thread(target=trickle, daemon=True)
        first = start_cli(settings, "gate", extra_env={"SENDGATE_GATE__INSTANCE_ID": "gate-a"})
        second = None
        try:
            sender.start()
            wait_until(lambda: read_outputs(settings).total() > 0, timeout=60, message="the first gate decides")
            second = start_cli(settings, "gate", extra_env={"SENDGATE_GATE__INSTANCE_ID": "gate-b"})
            time.sleep(4)
            assert second.terminate() == 0, second.output()[-3000:]
            decided_when_second_left = read_outputs(settings).total()
            print(f"decided when the second gate left: {decided_when_second_left} of {total}")
            assert decided_when_second_left < total, "the rebalances must land while records are being decided"
            sender.join(120)
            outputs = wait_for_outputs(settings, total, timeout=240)
            assert first.terminate() == 0, first.output()[-3000:]
            assert "gate revoked" in first.output(), "the first gate never saw a rebalance: the test proves nothing"
        finally:
            first.close()
            if second is not None:
                second.close()
    assert_exactly_once(outputs, requests)


def test_nothing_is_decided_while_redis_is_down_and_everything_after(kafka_topics, tmp_path):
    port = free_port()
    settings = kafka_topics.model_copy(update={"redis": RedisSettings(url=f"redis://127.0.0.1:{port}/0", socket_timeout_seconds=0.5, connect_timeout_seconds=0.5)})
    codec = AvroCodec.from_settings(settings)
    redis_process = start_redis(port, str(tmp_path))
    opted_out = "outage-victim@example.com"
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email=opted_out)])
    first = [send_request(message_id=f"before-{i}", to=opted_out if i % 2 else "fine@example.com") for i in range(100)]
    second = [send_request(message_id=f"during-{i}", to=opted_out if i % 2 else "fine@example.com") for i in range(100)]
    try:
        with running_applier(settings), running_gate(settings) as gate:
            produce_sends(settings, codec, first)
            assert wait_for_outputs(settings, len(first)).total() == len(first)
            redis_process.terminate()
            redis_process.wait(10)
            produce_sends(settings, codec, second)
            wait_until(lambda: gate.progress.fail_closed_pauses > 0, message="gate failing closed")
            time.sleep(3)
            assert read_outputs(settings).total() == len(first), "nothing may be decided while Redis is down"
            redis_process = start_redis(port, str(tmp_path))  # comes back empty: the applier rebuilds it
            outputs = wait_for_outputs(settings, len(first) + len(second), timeout=90)
    finally:
        redis_process.terminate()
        redis_process.wait(10)
    counts = message_ids(outputs)
    assert len(counts) == len(first) + len(second) and max(counts.values()) == 1
    allowed = {m.key().decode() for m in outputs.allowed}
    assert not any(r.message_id in allowed for r in first + second if r.to == opted_out)
