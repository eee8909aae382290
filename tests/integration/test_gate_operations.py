"""The gate's operations surface: probes, metrics, and stopping loudly on a dead-letter burst."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from tests.integration.support import (
    WorkerThread,
    free_port,
    preference_event,
    produce_events,
    produce_raw,
    produce_sends,
    read_outputs,
    run_cli,
    running_applier,
    send_request,
    start_cli,
    wait_until,
)
from worker.assembly import Runtime, build_applier, build_gate
from worker.codec import AvroCodec
from worker.models import PreferenceEventType as T


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_readyz_reports_fail_closed_until_the_store_is_built_and_metrics_count_decisions(kafka_topics):
    settings = kafka_topics
    codec = AvroCodec.from_settings(settings)
    port = free_port()
    produce_events(settings, codec, [preference_event(T.EMAIL_OPT_OUT_ORGANIZATION, email="out@example.com")])
    produce_sends(settings, codec, [send_request(to="out@example.com"), send_request(to="fine@example.com")])
    gate = start_cli(settings, "gate", extra_env={"SENDGATE_HTTP__ENABLED": "true", "SENDGATE_HTTP__PORT": str(port)})
    try:
        wait_until(lambda: _get(port, "/healthz")[0] == 200, timeout=30, message="/healthz")
        # No applier has built the store yet: the gate must fail closed and say so.
        wait_until(
            lambda: "not ready" in _get(port, "/readyz")[1] or "empty" in _get(port, "/readyz")[1], timeout=30, message="/readyz reason"
        )
        status, body = _get(port, "/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        assert read_outputs(settings).total() == 0
        with running_applier(settings):
            wait_until(lambda: _get(port, "/readyz")[0] == 200, timeout=30, message="ready once the store is built")
            wait_until(lambda: read_outputs(settings).total() == 2, timeout=30, message="both sends decided")
        metrics = _get(port, "/metrics")[1]
        assert (
            'sendgate_decisions_total{category="MARKETING",channel="EMAIL",decision="suppressed",reason="EMAIL_OPT_OUT_ORGANIZATION"} 1.0'
            in metrics
        )
        assert 'sendgate_decisions_total{category="MARKETING",channel="EMAIL",decision="allowed",reason="NONE"} 1.0' in metrics
        assert "sendgate_fail_closed_pauses_total" in metrics and "sendgate_gate_batch_phase_seconds_bucket" in metrics
        assert _get(port, "/nope")[0] == 404
        assert gate.terminate() == 0, gate.output()[-3000:]
    finally:
        gate.close()


def test_a_burst_of_dead_letters_stops_the_gate_loudly_and_commits_nothing(kafka_topics):
    settings = kafka_topics
    produce_raw(settings, settings.topics.requested, [(f"junk-{i}".encode(), b"not avro at all") for i in range(20)])
    with running_applier(settings):
        code, output = run_cli(settings, "gate", timeout=60, extra_env={"SENDGATE_GATE__DEAD_LETTER_BURST_MAX": "5"})
    assert code == 12, output[-3000:]  # ExitCode.DEAD_LETTER_BURST
    assert "undecodable requests within" in output
    assert read_outputs(settings).dead_letter == [], "the aborted transaction must not be visible"


def test_an_idle_gate_reports_ready_once_the_store_is_built_and_an_idle_applier_stays_alive(kafka_topics):
    settings = kafka_topics
    gate_runtime = Runtime.create(settings)
    gate = WorkerThread(gate_runtime, build_gate(gate_runtime).run)
    applier_runtime = Runtime.create(settings)
    applier = WorkerThread(applier_runtime, build_applier(applier_runtime).run)
    try:
        wait_until(lambda: gate_runtime.health.readiness()[0], timeout=30, message="idle gate ready")
        time.sleep(1.5)
        assert applier_runtime.health.seconds_since_alive() < 1.0, "the applier loop marks itself alive"
        assert gate_runtime.health.seconds_since_alive() < 1.0
    finally:
        applier.stop()
        gate.stop()
