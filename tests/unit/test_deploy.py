"""The deployment files under deploy/ parse and agree with the code they deploy.

No Docker or cluster is needed: the compose file, the Dockerfile and the
Kubernetes manifests are read as data and checked against the CLI commands,
the settings model and the health endpoint they rely on. ``kubectl kustomize``
renders the manifests when kubectl is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from worker.cli import main as cli_main
from worker.config import GateSettings, HttpSettings, Settings, TopicSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
HTTP_PORT = HttpSettings().port
SENDGATE_COMMANDS = {"topics": ["topics", "create"], "applier": ["preferences"], "gate": ["gate"]}


def _deploy_files(*suffixes: str) -> list[Path]:
    found: list[Path] = []
    for root, folders, files in os.walk(DEPLOY):
        # Hidden folders (deploy/local/.state) hold local-stack runtime data: not
        # walked at all, since the running broker deletes topic folders in there
        # (rglob raised FileNotFoundError on one while make test ran).
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(Path(root) / name for name in files if not name.startswith(".") and Path(name).suffix in suffixes)
    return sorted(found)


def _load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


# -- everything parses --------------------------------------------------------------
def test_every_yaml_and_json_file_under_deploy_parses() -> None:
    yaml_files = _deploy_files(".yml", ".yaml")
    json_files = _deploy_files(".json")
    assert COMPOSE_FILE in yaml_files and json_files, "expected the compose file and the dashboard"
    for path in yaml_files:
        assert _load_all(path), f"{path} is empty"
    for path in json_files:
        json.loads(path.read_text(encoding="utf-8"))


# -- compose ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _resolve_cli(args: list[str]) -> click.Command | None:
    command: click.Command = cli_main
    for token in args:
        if not isinstance(command, click.Group) or token not in command.commands:
            return None
        command = command.commands[token]
    return None if isinstance(command, click.Group) else command


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"kafka", "redis", "schema-registry", "topics", "applier", "gate", "prometheus", "grafana"}
    assert expected <= set(services)
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")
    redis_command = " ".join(services["redis"]["command"])
    assert "--maxmemory-policy noeviction" in redis_command
    assert "--appendonly yes" in redis_command


def test_compose_sendgate_services_build_the_dockerfile_and_run_real_commands(compose: dict[str, Any]) -> None:
    for name, args in SENDGATE_COMMANDS.items():
        service = compose["services"][name]
        build = service["build"]
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name
        assert DOCKERFILE.is_file()
        assert (context / "pyproject.toml").is_file(), f"{name}: build context must be the repository root"
        assert service["command"] == args, name
        assert _resolve_cli(args) is not None, f"{name}: `sendgate {' '.join(args)}` is not a command"


def test_compose_settings_are_valid(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SENDGATE_COMMANDS:
        environment = compose["services"][name]["environment"]
        _assert_known_settings(environment, where=f"compose {name}")
        for key in [key for key in os.environ if key.startswith("SENDGATE_")]:
            monkeypatch.delenv(key)
        for key, value in environment.items():
            monkeypatch.setenv(key, str(value))
        settings = Settings()
        assert settings.http.host == "0.0.0.0", f"{name}: metrics must listen beyond loopback in a container"
        assert settings.kafka.bootstrap_servers == "kafka:19092"
        assert settings.schema_registry.url == "http://schema-registry:8081"
    kafka_env = compose["services"]["kafka"]["environment"]
    assert "kafka:19092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_dependencies_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy, which has no healthcheck"
    for name in ("applier", "gate"):
        depends = services[name]["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{HTTP_PORT}/healthz" in probe
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("kafka", "redis", "schema-registry", "applier", "gate", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        for volume in compose["services"][name]["volumes"]:
            source = volume.split(":", 1)[0]
            assert (COMPOSE_FILE.parent / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_both_workers_and_loads_the_rules(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]] for job in config["scrape_configs"]
    }
    assert targets["sendgate-gate"] == [f"gate:{HTTP_PORT}"]
    assert targets["sendgate-applier"] == [f"applier:{HTTP_PORT}"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in compose["services"]["prometheus"]["volumes"]}
    for rule_file in config["rule_files"]:
        assert mounts.get(rule_file) == "./prometheus/alerts.yml"


def test_grafana_provisions_the_dashboard(compose: dict[str, Any]) -> None:
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in compose["services"]["grafana"]["volumes"]}
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/sendgate.yml").read_text(encoding="utf-8"))
    path = provider["providers"][0]["options"]["path"]
    assert (COMPOSE_FILE.parent / mounts[path] / "sendgate.json").is_file()
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"


# -- Dockerfile ---------------------------------------------------------------------
def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    # A builder stage compiles the Rust core into a wheel; the image installs that wheel only.
    stages = [line for line in instructions if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build") and stages[-1] == "FROM python:3.11-slim"
    assert any(line.startswith("RUN ") and "maturin build --release" in line for line in instructions)
    assert "COPY --from=build /wheels ./wheels" in instructions
    assert "pip install ./wheels/sendgate-*.whl" in text
    assert 'ENTRYPOINT ["sendgate"]' in instructions
    # worker/codec/schemas.py looks in <sys.prefix>/share/sendgate/schemas; sys.prefix is /usr/local.
    assert "/usr/local/share/sendgate/schemas" in text
    users = [line.split(None, 1)[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must run as a non-root user"
    for line in instructions:
        if line.startswith("COPY "):
            if "--from=" in line:
                continue  # copied from the builder stage, not the context
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), f"COPY source {source} missing"


# -- Kubernetes ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs.extend(_load_all(K8S / resource))
    return docs


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}"
    return found[0]


def _deployments(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == "Deployment"]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _assert_known_settings(names: Any, *, where: str) -> None:
    """Every SENDGATE_<SECTION>__<FIELD> name must be a field of worker.config.Settings."""
    for name in names:
        if not name.startswith("SENDGATE_"):
            continue
        section, _, field = name.removeprefix("SENDGATE_").lower().partition("__")
        assert section in Settings.model_fields, f"{where}: {name}: no settings section {section!r}"
        model = Settings.model_fields[section].annotation
        assert field in model.model_fields, f"{where}: {name}: {section} has no field {field!r}"  # type: ignore[union-attr]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_every_manifest_is_a_kubernetes_object(manifests: list[dict[str, Any]]) -> None:
    kinds = {m["kind"] for m in manifests}
    expected = {
        "Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "TriggerAuthentication",
    }
    assert expected <= kinds
    for manifest in manifests:
        assert manifest.get("apiVersion") and manifest["metadata"].get("name"), manifest


def test_deployments_probe_health_and_have_resources(manifests: list[dict[str, Any]]) -> None:
    deployments = _deployments(manifests)
    assert {d["metadata"]["name"] for d in deployments} == {"sendgate-gate", "sendgate-applier"}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        container = _container(deployment)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["metrics"] == HTTP_PORT, name
        liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
        assert liveness["path"] == "/healthz" and readiness["path"] == "/readyz", name
        assert ports.get(liveness["port"], liveness["port"]) == HTTP_PORT and ports.get(readiness["port"], readiness["port"]) == HTTP_PORT
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(HTTP_PORT)
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["terminationGracePeriodSeconds"] >= 60, f"{name}: the grace period must cover the drain"
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert _container(_one(manifests, "Deployment", "sendgate-gate"))["args"] == ["gate"]
    assert _container(_one(manifests, "Deployment", "sendgate-applier"))["args"] == ["preferences"]


def test_gate_instances_are_unique_and_drain(manifests: list[dict[str, Any]]) -> None:
    gate = _one(manifests, "Deployment", "sendgate-gate")
    assert gate["spec"]["replicas"] >= 2
    env = {item["name"]: item for item in _container(gate)["env"]}
    assert env["SENDGATE_GATE__INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Commit waits up to 60 s (worker/gate/pipeline.py); the pod must not be killed first.
    assert gate["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 60


def test_secrets_and_config_are_wired(manifests: list[dict[str, Any]]) -> None:
    secret = _one(manifests, "Secret", "sendgate-secrets")
    config = _one(manifests, "ConfigMap", "sendgate-config")
    secret_keys = set(secret["stringData"])
    for key in (
        "SENDGATE_KAFKA__SASL_USERNAME",
        "SENDGATE_KAFKA__SASL_PASSWORD",
        "SENDGATE_KAFKA__SECURITY_PROTOCOL",
        "SENDGATE_KAFKA__SASL_MECHANISM",
        "SENDGATE_REDIS__URL",
        "SENDGATE_REDIS__PASSWORD",
        "SENDGATE_STATE__HASH_SECRET",
    ):
        assert key in secret_keys
    assert not set(config["data"]) & secret_keys, "a setting is in both the ConfigMap and the Secret"
    _assert_known_settings(secret_keys, where="secret.yaml")
    _assert_known_settings(config["data"], where="configmap.yaml")
    workloads = _deployments(manifests) + [m for m in manifests if m["kind"] == "Job"]
    for workload in workloads:
        container = _container(workload)
        assert {"configMapRef": {"name": "sendgate-config"}} in container["envFrom"]
        _assert_known_settings([item["name"] for item in container.get("env", [])], where=workload["metadata"]["name"])
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                assert ref["name"] == "sendgate-secrets" and ref["key"] in secret_keys, item


def test_manifest_settings_validate(manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [key for key in os.environ if key.startswith("SENDGATE_")]:
        monkeypatch.delenv(key)
    values = {**_one(manifests, "ConfigMap", "sendgate-config")["data"], **_one(manifests, "Secret", "sendgate-secrets")["stringData"]}
    for key, value in values.items():
        if key.startswith("SENDGATE_"):
            monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.http.host == "0.0.0.0"
    assert settings.kafka.security_protocol == "SASL_SSL"


def test_topics_job(manifests: list[dict[str, Any]]) -> None:
    job = _one(manifests, "Job", "sendgate-topics")
    args = _container(job)["args"]
    assert args == ["topics", "create"] and _resolve_cli(args) is not None


def test_pdb_and_service_select_the_gate(manifests: list[dict[str, Any]]) -> None:
    gate_labels = _one(manifests, "Deployment", "sendgate-gate")["spec"]["template"]["metadata"]["labels"]
    pdb = _one(manifests, "PodDisruptionBudget", "sendgate-gate")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= gate_labels.items()
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    services = [m for m in manifests if m["kind"] == "Service"]
    assert any(s["spec"]["selector"].items() <= gate_labels.items() for s in services)
    for service in services:
        assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert [p["port"] for p in service["spec"]["ports"]] == [HTTP_PORT]


def test_keda_scales_the_gate_on_its_consumer_lag(manifests: list[dict[str, Any]]) -> None:
    scaled = _one(manifests, "ScaledObject", "sendgate-gate")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "sendgate-gate"
    assert scaled["spec"]["minReplicaCount"] >= 2
    config = _one(manifests, "ConfigMap", "sendgate-config")["data"]
    assert scaled["spec"]["maxReplicaCount"] <= int(config["SENDGATE_TOPICS__PARTITIONS"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == GateSettings().group_id == config["SENDGATE_GATE__GROUP_ID"]
    assert trigger["metadata"]["topic"] == TopicSettings().requested == config["SENDGATE_TOPICS__REQUESTED"]
    assert trigger["metadata"]["bootstrapServers"] == config["SENDGATE_KAFKA__BOOTSTRAP_SERVERS"]
    auth = _one(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    secret_keys = set(_one(manifests, "Secret", "sendgate-secrets")["stringData"])
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == "sendgate-secrets" and ref["key"] in secret_keys, ref


def test_secret_is_a_template() -> None:
    text = (K8S / "secret.yaml").read_text(encoding="utf-8")
    assert "REPLACE_ME" in text
    assert not re.search(r"(?i)BEGIN [A-Z ]*PRIVATE KEY", text)


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed; the manifests were still checked as YAML above")
def test_kustomize_renders() -> None:
    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert all(doc["metadata"].get("namespace") == "sendgate" for doc in rendered if doc["kind"] != "Namespace")
    images = {_container(doc)["image"] for doc in rendered if doc["kind"] in {"Deployment", "Job"}}
    assert len(images) == 1 and ":" in next(iter(images))
