"""The worker commands as an operator runs them: `run`, `rebuild-state`, and refusals."""

from __future__ import annotations

from tests.integration.support import (
    free_port,
    now_ms,
    preference_event,
    produce_events,
    produce_sends,
    run_cli,
    send_request,
    start_cli,
    start_redis,
    wait_for_outputs,
)
from worker.codec import AvroCodec
from worker.config import RedisSettings
from worker.loadgen.scenario import build_scenario
from worker.models import PreferenceEventType as T
from worker.models import SuppressionReason
from worker.policy.decision import DecisionPolicy
from worker.state.redis_store import RedisStateStore


def test_run_decides_with_applier_and_gate_in_one_process_and_stops_cleanly(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    scenario = build_scenario(base_time_ms=now_ms())
    produce_events(settings, codec, scenario.events)
    produce_sends(settings, codec, [s.request for s in scenario.sends])
    worker = start_cli(settings, "run")
    try:
        outputs = wait_for_outputs(settings, len(scenario.sends))
        assert worker.terminate() == 0, worker.output()[-3000:]
    finally:
        worker.close()
    assert len(outputs.allowed) == sum(s.expected_allowed for s in scenario.sends)
    assert len(outputs.suppressed) == sum(not s.expected_allowed for s in scenario.sends)


def test_rebuild_state_replays_the_topic_into_an_emptied_store(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email=f"r{i}@example.com") for i in range(40)])
    produce_events(settings, codec, [preference_event(T.SMS_OPT_OUT, phone="+14155550123")])  # rejected: never opted in
    code, output = run_cli(settings, "rebuild-state", "--yes")
    assert code == 0, output[-3000:]
    assert "rebuilt: 40 events applied, 1 rejected" in output
    store = RedisStateStore.from_settings(settings.redis, settings.state)
    policy = DecisionPolicy()
    prepared = policy.prepare(send_request(to="r7@example.com"))
    snapshot = store.read(prepared.keys)
    assert snapshot.status.ready
    assert policy.decide(prepared, snapshot.facts).reasons == (SuppressionReason.EMAIL_OPT_OUT_ORGANIZATION,)


def test_workers_refuse_a_redis_that_evicts_keys(kafka_topics, tmp_path):
    port = free_port()
    redis_process = start_redis(port, str(tmp_path), "--maxmemory-policy", "allkeys-lru")
    try:
        settings = kafka_topics.model_copy(update={"redis": RedisSettings(url=f"redis://127.0.0.1:{port}/0")})
        for command in ("preferences", "gate"):
            code, output = run_cli(settings, command, timeout=60)
            assert code == 14, output[-2000:]  # ExitCode.CONFIG
            assert "noeviction" in output
    finally:
        redis_process.terminate()
        redis_process.wait(10)


def test_workers_exit_clearly_when_redis_is_unreachable_at_start(kafka_topics):
    settings = kafka_topics.model_copy(update={"redis": RedisSettings(url="redis://127.0.0.1:1/0", connect_timeout_seconds=0.3)})
    code, output = run_cli(settings, "rebuild-state", "--yes", timeout=60)
    assert code == 15, output[-2000:]  # ExitCode.UNREACHABLE
    assert "Redis" in output and "Traceback" not in output
