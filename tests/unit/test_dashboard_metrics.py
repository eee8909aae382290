"""The Grafana dashboard and the Prometheus alert rules use only metrics sendgate exports.

Every metric name in a dashboard expression or an alert rule must be a series
of ``worker.metrics.Metrics`` (or Prometheus' own ``up``); label matchers and
``by (...)`` clauses must name labels those metrics carry. The alert rules'
structure is checked by a parser that always runs; ``promtool`` (Debian
package ``prometheus``) additionally checks and unit-tests them when installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sendgate.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# Labels a scrape attaches to every series (compose: job, instance, component;
# kubernetes-scrape.yml adds namespace and pod).
TARGET_LABELS = {"job", "instance", "component", "namespace", "pod"}
# Series Prometheus makes itself, which the rules may use.
PROMETHEUS_SERIES = {"up": set()}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "atan2",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "inf", "nan",
}
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_GRAFANA_VARS = re.compile(r"\$__\w+|\$\{\w+(?::\w+)?\}|\$\w+")


# -- sendgate's series --------------------------------------------------------
def exported_series() -> dict[str, set[str]]:
    """Series name → label names, for every series ``Metrics`` can export.

    prometheus_client registers a Counter named ``x_total`` as family ``x`` with
    samples ``x_total`` and ``x_created``; a Histogram ``h`` has ``h_bucket``
    (with ``le``), ``h_sum``, ``h_count`` and ``h_created``.
    """
    metrics = Metrics()
    labels_of: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        # Labelled metrics without children collect no samples, so the label
        # names come from the metric object itself.
        for family in getattr(collector, "describe", lambda: [])():
            labels_of[family.name] = set(getattr(collector, "_labelnames", ()))
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = labels_of.get(family.name, set())
        if family.type == "counter":
            series[f"{family.name}_total"] = labels
            series[f"{family.name}_created"] = labels
        elif family.type == "histogram":
            series[f"{family.name}_bucket"] = labels | {"le"}
            for suffix in ("_sum", "_count", "_created"):
                series[f"{family.name}{suffix}"] = labels
        elif family.type == "summary":
            series[family.name] = labels | {"quantile"}
            for suffix in ("_sum", "_count", "_created"):
                series[f"{family.name}{suffix}"] = labels
        else:
            series[family.name] = labels
    return series


SERIES = exported_series()


def test_exported_series_follow_prometheus_client_naming() -> None:
    assert "sendgate_decisions_total" in SERIES
    assert "sendgate_decisions_total_total" not in SERIES
    assert SERIES["sendgate_decisions_total"] == {"channel", "category", "decision", "reason"}
    assert "le" in SERIES["sendgate_decision_latency_seconds_bucket"]
    assert "sendgate_decision_latency_seconds_count" in SERIES
    assert "sendgate_state_ready" in SERIES


# -- a small PromQL reader ------------------------------------------------------
def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)


def metric_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """``(metric name, label names in its matcher)`` for every vector selector in ``expr``."""
    text = _strip_strings(_GRAFANA_VARS.sub("5m", expr))
    # Grouping and matching clauses name labels, not metrics.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    found: list[tuple[str, set[str]]] = []
    for match in re.finditer(rf"(?<![\w:.$]){_IDENT}(?![\w:])", text):
        name = match.group(0)
        rest = text[match.end():]
        if name.lower() in PROMQL_KEYWORDS or rest.lstrip().startswith("("):
            continue  # keyword, aggregation or function call
        before = text[: match.start()]
        if before.count("{") > before.count("}"):
            continue  # a label name inside a matcher
        labels: set[str] = set()
        brace = re.match(r"\s*\{([^}]*)\}", rest)
        if brace:
            labels = set(re.findall(rf"({_IDENT})\s*(?:=~|!~|!=|=)", brace.group(1)))
        found.append((name, labels))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Label names in ``by (...)``/``without (...)``/``on (...)``/``ignoring (...)`` clauses."""
    names: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", _strip_strings(expr)):
        names.update(label.strip() for label in clause.split(",") if label.strip())
    return names


def test_promql_reader() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, phase) (rate(sendgate_gate_batch_phase_seconds_bucket{job=~"$job", '
        'instance=~"$instance"}[$__rate_interval]))) / on (job) group_left up offset 5m and bool sendgate_state_ready > 0'
    )
    assert metric_selectors(expr) == [
        ("sendgate_gate_batch_phase_seconds_bucket", {"job", "instance"}),
        ("up", set()),
        ("sendgate_state_ready", set()),
    ]
    assert grouping_labels(expr) == {"le", "phase", "job"}
    assert metric_selectors('sum(rate(x_total{a="sum(y)"}[5m])) > 1e3') == [("x_total", {"a"})]


# -- the dashboard ---------------------------------------------------------------
def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = [
        (panel.get("title", "?"), target["expr"])
        for panel in _walk_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", text.strip())
            found.append((f"${variable['name']}", inner.group(1) if inner else text))
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _check_expression(where: str, expr: str) -> list[str]:
    problems: list[str] = []
    selectors = metric_selectors(expr)
    if not selectors:
        problems.append(f"{where}: no metric found in {expr!r}")
    known = {**SERIES, **PROMETHEUS_SERIES}
    labels_in_expr: set[str] = set(TARGET_LABELS)
    for name, matcher_labels in selectors:
        if name not in known:
            problems.append(f"{where}: {name} is not exported by worker.metrics.Metrics")
            continue
        labels_in_expr |= known[name]
        unknown = matcher_labels - known[name] - TARGET_LABELS
        if unknown:
            problems.append(f"{where}: {name} has no label(s) {sorted(unknown)}")
    unknown_grouping = grouping_labels(expr) - labels_in_expr
    if unknown_grouping:
        problems.append(f"{where}: grouping by label(s) {sorted(unknown_grouping)} that no metric of the expression has")
    return problems


def test_dashboard_uses_only_exported_metrics() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) > 20
    problems = [problem for title, expr in expressions for problem in _check_expression(f"panel {title!r}", expr)]
    assert not problems, "\n".join(problems)


def test_alert_rules_use_only_exported_metrics() -> None:
    problems = [problem for rule in alert_rules() for problem in _check_expression(f"alert {rule['alert']}", rule["expr"])]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_wrong_name_and_a_wrong_label() -> None:
    assert _check_expression("x", "rate(sendgate_decision_total[5m])")  # missing "s"
    assert _check_expression("x", "rate(sendgate_decisions_total_total[5m])")
    assert _check_expression("x", 'rate(sendgate_transactions_total{reason="x"}[5m])')
    assert _check_expression("x", "sum by (phase) (rate(sendgate_decisions_total[5m]))")
    assert not _check_expression("x", 'sum by (phase) (rate(sendgate_gate_batch_phase_seconds_sum{phase="commit"}[5m]))')


def test_dashboard_covers_the_operations_views() -> None:
    used = {name for _, expr in dashboard_expressions() for name, _ in metric_selectors(expr)}
    required = {
        "sendgate_decisions_total",
        "sendgate_transactional_bypass_total",
        "sendgate_decision_latency_seconds_bucket",
        "sendgate_gate_batch_phase_seconds_bucket",
        "sendgate_preference_lag_events",
        "sendgate_barrier_waits_total",
        "sendgate_state_ready",
        "sendgate_dead_letters_total",
        "sendgate_transactions_total",
        "sendgate_kafka_errors_total",
        "sendgate_state_errors_total",
        "sendgate_fail_closed_pauses_total",
        "sendgate_fail_closed_seconds_total",
        "sendgate_preference_events_miskeyed_total",
    }
    assert required <= used, f"dashboard lacks {sorted(required - used)}"
    exprs = [expr for _, expr in dashboard_expressions()]
    assert any("histogram_quantile(0.99" in e and "sendgate_decision_latency_seconds_bucket" in e for e in exprs)
    assert any("histogram_quantile(0.50" in e and "sendgate_decision_latency_seconds_bucket" in e for e in exprs)
    assert any(re.search(r"by \(decision, reason\)", e) and "sendgate_decisions_total" in e for e in exprs)


def test_dashboard_is_provisionable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "sendgate"
    ids = [panel["id"] for panel in _walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _walk_panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))
    assert datasources["datasources"][0]["type"] == "prometheus"


# -- alert rules: structure (always runs) -------------------------------------------
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
REQUIRED_ALERTS = {
    "SendgateWorkerDown",
    "SendgateGateNotReady",
    "SendgatePreferenceLagGrowing",
    "SendgateDeadLetters",
    "SendgateTransactionalBypassSpike",
    "SendgateFailClosedTooLong",
    "SendgateTransactionsFailing",
    "SendgatePreferenceEventsMiskeyed",
    "SendgateKafkaClientsRebuilding",
}


def test_alert_rules_structure() -> None:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names)), "group names must be unique"
    names: list[str] = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        assert group["rules"], f"group {group['name']} has no rules"
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert isinstance(rule.get("alert"), str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", rule["alert"]), rule
            names.append(rule["alert"])
            expr = rule.get("expr")
            assert isinstance(expr, str) and expr.strip(), rule["alert"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), rule["alert"]
            assert DURATION.match(str(rule.get("for", ""))), f"{rule['alert']}: `for` must be a duration"
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert set(names) >= REQUIRED_ALERTS, f"missing alerts: {sorted(REQUIRED_ALERTS - set(names))}"


def test_alert_rules_have_the_required_conditions() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert re.search(r"sendgate_state_ready\{[^}]*\}\s*==\s*0", rules["SendgateGateNotReady"]["expr"])
    assert rules["SendgateGateNotReady"]["for"] == "2m"
    assert re.search(r"\bup\{[^}]*\}\s*==\s*0", rules["SendgateWorkerDown"]["expr"])
    assert "rate(sendgate_fail_closed_seconds_total" in rules["SendgateFailClosedTooLong"]["expr"]
    assert "sendgate_preference_lag_events" in rules["SendgatePreferenceLagGrowing"]["expr"]
    assert "sendgate_dead_letters_total" in rules["SendgateDeadLetters"]["expr"]
    assert "sendgate_transactional_bypass_total" in rules["SendgateTransactionalBypassSpike"]["expr"]
    assert re.search(r'result=~"aborted\|failed"', rules["SendgateTransactionsFailing"]["expr"])
    assert "sendgate_preference_events_miskeyed_total" in rules["SendgatePreferenceEventsMiskeyed"]["expr"]
    assert re.search(r"increase\(sendgate_kafka_recoveries_total\[10m\]\)", rules["SendgateKafkaClientsRebuilding"]["expr"])


def test_alert_unit_tests_cover_every_required_alert() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["alerts.yml"]
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert tested >= REQUIRED_ALERTS, f"untested alerts: {sorted(REQUIRED_ALERTS - tested)}"


# -- promtool, where installed (apt-get install prometheus) ------------------------
PROMTOOL = shutil.which("promtool")
# `make test` installs promtool and sets SENDGATE_REQUIRE_TOOLS=1: there a missing one fails, never skips.
PROMTOOL_REQUIRED = os.environ.get("SENDGATE_REQUIRE_TOOLS") == "1"
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not PROMTOOL_REQUIRED,
    reason="promtool not installed (apt-get install prometheus); the structural tests above still ran",
)


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool is required (SENDGATE_REQUIRE_TOOLS=1) but not installed: make test-tools"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


@needs_promtool
def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_alert_unit_tests() -> None:
    result = _promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_compose_prometheus_config(tmp_path: Path) -> None:
    # The config names the rules by their path inside the Prometheus container.
    config = PROMETHEUS_CONFIG.read_text(encoding="utf-8").replace("/etc/prometheus/alerts.yml", str(ALERTS))
    (tmp_path / "prometheus.yml").write_text(config, encoding="utf-8")
    result = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    # promtool has no expression checker: wrap each query in a recording rule.
    rules = [
        {
            "record": f"sendgate:dashboard_query_{index}",
            "expr": _GRAFANA_VARS.sub(lambda m: "5m" if m.group(0).startswith("$__") else ".*", expr),
        }
        for index, (_, expr) in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
