"""Credentials reach the clients, and the metrics endpoint binds only where it is told to.

* Kafka SASL/PLAIN: a private broker (tests/chaos/instances.py, the stack's
  KAFKA_SASL_PORT listener): ``sendgate topics create``, the applier and the
  gate work with the SENDGATE_KAFKA__* credentials; a wrong password is refused
  as a configuration error (exit 14, "refused the credentials"), not as an
  unreachable Kafka.
* Redis AUTH: a private ``redis-server --requirepass``: the workers work with
  SENDGATE_REDIS__PASSWORD or a password in the URL, and fail clearly without.
* SENDGATE_HTTP__HOST/PORT: the endpoint answers there and nowhere else.
No password may show up in any output.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from pydantic import SecretStr

from tests.chaos import report
from tests.chaos.checker import check
from tests.chaos.instances import free_port, redis_server, shared_private_stack
from tests.chaos.processes import WorkerProcess
from tests.chaos.run import with_services
from tests.chaos.workload import Audience, EventProducer, Ledger, SendProducer, T
from tests.integration.support import (
    running_applier,
    running_gate,
    settings_env,
    wait_until,
)
from worker.codec import AvroCodec
from worker.config import KafkaSettings, RedisSettings, Settings
from worker.errors import ExitCode
from worker.models import Category, Channel
from worker.state.redis_store import RedisStateStore

REDIS_PASSWORD = "redis-auth-Secret-4711"


@pytest.fixture(scope="session")
def private_kafka(tmp_path_factory):  # type: ignore[no-untyped-def]
    with shared_private_stack(tmp_path_factory.mktemp("private-kafka")) as stack:
        yield stack


def cli(settings: Settings, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "worker", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def decide_a_few(settings: Settings) -> None:
    """Applier and gate in this process decide an opt-out and two sends through ``settings``' clients."""
    codec = AvroCodec.from_settings(settings)
    ledger = Ledger()
    audience = Audience.create(ledger.run_id, 3)
    EventProducer(settings, codec, ledger).emit([audience.event(T.EMAIL_OPT_OUT_ORGANIZATION, 0)])
    sends = SendProducer(settings, codec, ledger)
    for i in (0, 1):
        sends.send(audience.request(ledger.next_id(), i, channel=Channel.EMAIL, category=Category.MARKETING, user="user-1"))
    sends.flush()
    with running_applier(settings), running_gate(settings) as gate:
        wait_until(lambda: gate.progress.consumed >= 2, timeout=60, message="both sends decided")
    verdict = check(settings, ledger, codec=codec)
    assert verdict.clean and verdict.counts == {"allowed": 1, "suppressed": 1}, verdict.describe()


# --- Kafka SASL/PLAIN ------------------------------------------------------------------


def sasl_settings(settings: Settings, stack, password: str) -> Settings:  # type: ignore[no-untyped-def]
    kafka = KafkaSettings(
        bootstrap_servers=stack.sasl_bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=stack.sasl_username,
        sasl_password=SecretStr(password),
    )
    return settings.model_copy(update={"kafka": kafka, "redis": RedisSettings(url=stack.redis_url)})


def test_kafka_sasl_plain_credentials_reach_every_client(settings, private_kafka):
    with report.fault("security: Kafka SASL/PLAIN (topics create, applier, gate)"):
        good = sasl_settings(settings, private_kafka, private_kafka.sasl_password)
        created = cli(good, "topics", "create")
        assert created.returncode == 0, created.stdout + created.stderr
        assert "created" in created.stdout
        decide_a_few(good)  # admin, consumers and the transactional producer all authenticate
        assert private_kafka.sasl_password not in created.stdout + created.stderr


def test_a_wrong_kafka_password_is_refused_as_a_configuration_error(settings, private_kafka):
    """Not "did not answer ... transport failure" (15): the brokers said no, the settings must change (14)."""
    with report.fault("security: Kafka SASL/PLAIN wrong password") as row:
        wrong_password = "not-the-password-0815"
        started = time.monotonic()
        refused = cli(sasl_settings(settings, private_kafka, wrong_password), "topics", "create")
        took = time.monotonic() - started
        output = refused.stdout + refused.stderr
        said = " ".join(refused.stderr.split())  # the console wraps long lines
        row.note = f"exit {refused.returncode} after {took:.1f} s, says: {said[-160:]}"
        assert refused.returncode == ExitCode.CONFIG, output
        assert (
            f"Kafka at {private_kafka.sasl_bootstrap} refused the credentials (SASL authentication failed): "
            "check SENDGATE_KAFKA__SASL_USERNAME and SENDGATE_KAFKA__SASL_PASSWORD"
        ) in said, output
        assert "did not answer" not in said, output
        assert wrong_password not in output and private_kafka.sasl_password not in output


@pytest.mark.parametrize("command", ["gate", "preferences", "run"])
def test_a_worker_with_a_wrong_kafka_password_exits_at_start(settings, private_kafka, command):
    """Workers wait out an unreachable Kafka, but refused credentials never heal: exit 14 at once."""
    refused = cli(sasl_settings(settings, private_kafka, "not-the-password-0815"), command)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == ExitCode.CONFIG, refused.stdout + refused.stderr
    assert f"Kafka at {private_kafka.sasl_bootstrap} refused the credentials" in said, refused.stderr


def test_kafka_without_credentials_is_refused_by_the_sasl_listener(settings, private_kafka):
    plain = settings.model_copy(update={"kafka": KafkaSettings(bootstrap_servers=private_kafka.sasl_bootstrap)})
    refused = cli(plain, "topics", "create")
    assert refused.returncode == ExitCode.UNREACHABLE, refused.stdout + refused.stderr


# --- Redis AUTH --------------------------------------------------------------------------


def test_redis_auth_works_with_the_password_setting_or_in_the_url_and_fails_clearly_without(kafka_topics, tmp_path):
    with report.fault("security: Redis AUTH (password setting, URL; none, wrong)"), redis_server(
        tmp_path / "redis", password=REDIS_PASSWORD
    ) as server:
        with_setting = with_services(kafka_topics, redis_url=server.url, password=SecretStr(REDIS_PASSWORD))
        decide_a_few(with_setting)

        in_url = with_services(kafka_topics, redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0")
        store = RedisStateStore.from_settings(in_url.redis, in_url.state)
        store.check()
        assert store.status().ready, "the store built through the password setting is read through the URL password"
        store.close()

        for label, settings in (
            ("no password", with_services(kafka_topics, redis_url=server.url)),
            ("wrong password", with_services(kafka_topics, redis_url=server.url, password=SecretStr("wrong-Secret-42"))),
        ):
            result = cli(settings, "preferences", timeout=60)
            output = result.stdout + result.stderr
            assert result.returncode == ExitCode.UNREACHABLE, f"{label}: {output}"
            assert "auth" in output.lower() or "password" in output.lower(), f"{label}: the error does not say why: {output}"
            assert REDIS_PASSWORD not in output and "wrong-Secret-42" not in output, f"{label}: a password in the output"


# --- the metrics endpoint ------------------------------------------------------------------


def answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as response:
            return response.status == 200 and b"sendgate_" in response.read()
    except (urllib.error.URLError, OSError):
        return False


def other_addresses() -> list[str]:
    """Addresses of this host that are not loopback (connecting there must fail for a loopback bind)."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except socket.gaierror:
        found = set()
    found |= set(subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split())
    return sorted(a for a in found if ":" not in a and not a.startswith("127."))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_the_metrics_endpoint_binds_only_where_configured(kafka_topics, tmp_path, host):
    port, other_port = free_port(), free_port()
    with report.fault(f"security: /metrics bound to {host} only") as row:
        worker = WorkerProcess(
            kafka_topics, "preferences", name="applier", log_dir=tmp_path,
            extra_env={"SENDGATE_HTTP__ENABLED": "true", "SENDGATE_HTTP__HOST": host, "SENDGATE_HTTP__PORT": str(port)},
        ).start()
        try:
            deadline = time.monotonic() + 30
            while not answers(host, port):
                assert worker.poll() is None and time.monotonic() < deadline, f"no /metrics on {host}:{port}\n{worker.tail()}"
                time.sleep(0.2)
            elsewhere = [a for a in ["127.0.0.1", "127.0.0.2", *other_addresses()] if a != host]
            row.note = f"answers on {host}:{port}; refused on {', '.join(elsewhere)} and on port {other_port}"
            assert [a for a in elsewhere if answers(a, port)] == [], f"bound to {host}, but answers elsewhere"
            assert not answers(host, other_port)
            assert worker.terminate() == 0, worker.tail()
        finally:
            worker.close()
