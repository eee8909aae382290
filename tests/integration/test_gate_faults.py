"""The gate's guarantees under faults: SIGKILL restarts and a Redis outage."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from tests.integration.support import (
    free_port,
    preference_event,
    produce_events,
    produce_sends,
    producer,
    read_outputs,
    running_applier,
    running_gate,
    send_request,
    start_cli,
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


class PacedSends:
    """Produces ``requests`` at a fixed rate in a thread: faults land with records in flight whatever the gate's speed."""

    def __init__(self, settings, codec: AvroCodec, requests: list, *, per_second: float, chunk: int = 100) -> None:  # type: ignore[no-untyped-def]
        self.produced = 0
        self.failure: BaseException | None = None

        def run() -> None:
            started = time.monotonic()
            client = producer(settings)  # one for the run: a producer per chunk cannot keep the pace
            try:
                for start in range(0, len(requests), chunk):
                    produce_sends(settings, codec, requests[start : start + chunk], client)
                    self.produced = min(len(requests), start + chunk)
                    ahead = self.produced / per_second - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            except BaseException as exc:
                self.failure = exc

        self.total = len(requests)
        self.thread = threading.Thread(target=run, name="paced-sends", daemon=True)
        self.thread.start()

    @property
    def producing(self) -> bool:
        return self.thread.is_alive() and self.produced < self.total

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the paced producer did not finish"
        if self.failure is not None:
            raise self.failure


def test_every_record_is_decided_exactly_once_across_sigkill_restarts(kafka_topics):
    """Five SIGKILLs of the gate while requests arrive at a paced 1,000/s.

    Production outlasts the kills (30 s against at most 5 x 4 s of gate life
    plus start-ups), so each kill lands with records produced and not yet
    decided, however fast the gate: the test checks that it did instead of
    assuming the gate is slow.
    """
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    total = 30_000
    requests = opt_outs_and_requests(settings, codec, total)
    rng = random.Random(7)
    kills_in_flight = 0
    with running_applier(settings):
        sender = PacedSends(settings, codec, requests, per_second=1000)
        for _ in range(5):
            gate = start_cli(settings, "gate")
            time.sleep(rng.uniform(2.0, 4.0))
            if gate.poll() is not None:
                pytest.fail(f"gate exited early: {gate.output()[-3000:]}")
            if sender.producing:
                kills_in_flight += 1
            gate.kill()
            gate.close()
        assert kills_in_flight == 5, f"only {kills_in_flight} of 5 kills landed while requests were still arriving"
        final = start_cli(settings, "gate")
        try:
            sender.join(120)
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

    def trickle() -> None:  # ~3,000/s for 20 s, paced: the gates are deciding whenever the group rebalances
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
            # Requests still arrive (paced, 20 s) when the second gate leaves: both
            # rebalances land with records in flight, however fast the gates are.
            assert sender.is_alive(), "the rebalances must land while requests are still arriving"
            assert second.terminate() == 0, second.output()[-3000:]
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
    redis_settings = RedisSettings(url=f"redis://127.0.0.1:{port}/0", socket_timeout_seconds=0.5, connect_timeout_seconds=0.5)
    settings = kafka_topics.model_copy(update={"redis": redis_settings})
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
