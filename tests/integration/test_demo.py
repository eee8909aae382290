"""`sendgate demo` end to end on fresh topics."""

from __future__ import annotations

from tests.integration.support import run_cli
from worker.loadgen.scenario import build_scenario


def test_the_demo_decides_every_scripted_send_as_spec_requires(kafka_topics):
    code, output = run_cli(kafka_topics, "demo", "--timeout", "90", timeout=150)
    assert code == 0, output[-3000:]
    scripted = len(build_scenario(base_time_ms=0).sends)
    assert f"all {scripted} sends decided as SPEC requires" in output
    assert "Summary by decision and primary reason" in output
    for reason in ("INVALID_ADDRESS", "DO_NOT_CONTACT", "SILENCED", "EMAIL_OPT_OUT_ORGANIZATION", "EMAIL_OPT_OUT_DOMAIN",
                   "EMAIL_OPT_OUT_USER", "OK_TO_EMAIL_FALSE", "SMS_OPT_OUT", "SMS_NOT_OPTED_IN"):
        assert reason in output


def test_the_demo_fails_clearly_when_kafka_is_unreachable(kafka_topics):
    settings = kafka_topics.model_copy(update={"kafka": kafka_topics.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})})
    code, output = run_cli(settings, "demo", "--timeout", "5", timeout=60)
    assert code == 15  # ExitCode.UNREACHABLE
    assert "Kafka unreachable" in output and "Traceback" not in output
