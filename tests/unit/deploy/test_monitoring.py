"""The alert rules and the Grafana dashboard are valid and use only what the agent exports.

The rules and the dashboard live in the chart (``helm/edge-agent/files/``) and are linked from
``deploy/`` for bare installs. ``promtool`` is built by ``scripts/build_promtool`` (which
``scripts/setup`` runs) into ``.cache/bin/promtool``; without it these tests fail, never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
CHART_FILES = ROOT / "helm" / "edge-agent" / "files"
RULES = CHART_FILES / "prometheus-rules.yaml"
DASHBOARD = CHART_FILES / "grafana-dashboard.json"
BARE_RULES = ROOT / "deploy" / "prometheus" / "edge-agent-rules.yaml"
BARE_DASHBOARD = ROOT / "deploy" / "grafana" / "edge-agent-dashboard.json"
RULE_TESTS = Path(__file__).with_name("prometheus-rules.test.yaml")
PROMTOOL = ROOT / ".cache" / "bin" / "promtool"
SCRAPE_METRICS = frozenset({"up"})
"""Series Prometheus writes itself for every target; the only names not from the agent."""
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds at scrape time (their values are the operator's)."""
PROMQL_WORDS = frozenset({"and", "or", "unless", "bool", "offset"})


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail the test with the set-up hint when it is not built."""
    if not PROMTOOL.is_file():
        pytest.fail(
            f"promtool is missing at {PROMTOOL.relative_to(ROOT)}: run scripts/setup (or "
            "scripts/build_promtool), which builds it with `go install` (these tests never skip)",
            pytrace=False,
        )
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, check=False, timeout=120, cwd=cwd
    )


# ---------------------------------------------------------------- what the agent exports
def _exported() -> tuple[frozenset[str], dict[str, set[str]]]:
    """Sample names of a fresh agent's /metrics, and every value each label takes there."""
    names: set[str] = set()
    values: dict[str, set[str]] = {}
    text = Metrics(version="0.0.0").render().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)
    return frozenset(names), values


EXPORTED, LABEL_VALUES = _exported()


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    text = re.sub(r"\b\d[\w.]*", " ", text)  # numbers: 3600, 1e9, 0.05
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def label_matchers(expr: str) -> Iterator[tuple[str, str]]:
    """(label, literal value) of every = and != matcher with a fixed value."""
    for block in re.findall(r"\{([^}]*)\}", expr):
        for label, value in re.findall(r'(\w+)\s*!?=\s*"([^"]*)"', block):
            if "$" not in value:
                yield label, value


def check_expr(expr: str, where: str) -> list[str]:
    """Problems of one expression: names the agent does not export, label values it never has."""
    problems = [
        f"{where}: {name} is not exported by the agent"
        for name in sorted(metric_names(expr) - EXPORTED - SCRAPE_METRICS)
    ]
    for label, value in label_matchers(expr):
        if label not in TARGET_LABELS and value not in LABEL_VALUES.get(label, set()):
            problems.append(f'{where}: the agent never exports {label}="{value}"')
    return problems


def test_monitoring_name_extraction_finds_selected_metrics():
    """The PromQL scan finds selected metrics and skips functions, labels and ranges."""
    expr = (
        'sum without (reason) (increase(edge_agent_x_total{reason!="a"}[10m])) > 0 '
        "and predict_linear(edge_agent_y[30m], 4 * 3600) > 1e9 unless on (instance) up offset 1h"
    )
    assert metric_names(expr) == {"edge_agent_x_total", "edge_agent_y", "up"}
    assert list(label_matchers(expr)) == [("reason", "a")]


# ---------------------------------------------------------------- the rules
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_monitoring_promtool_is_built():
    """scripts/setup built promtool (these tests fail, not skip, without it)."""
    proc = promtool("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("promtool"), proc.stdout


def test_monitoring_rules_pass_promtool_check():
    """`promtool check rules` accepts the rules (syntax, templates, duplicate rules)."""
    proc = promtool("check", "rules", "--lint=all", "--lint-fatal", str(BARE_RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


def test_monitoring_rules_fire_as_their_unit_tests_expect(tmp_path):
    """`promtool test rules`: each alert fires on its input series and stays quiet otherwise."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules-under-test.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    proc = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_monitoring_every_alert_is_unit_tested():
    """Every alert of the rules file has at least one firing case in the promtool tests."""
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules()} - fired == set()


def test_monitoring_rules_use_only_exported_metrics():
    """Every rule selects metrics the agent exports (or `up`), with label values it has."""
    problems = [p for rule in rules() for p in check_expr(rule["expr"], rule["alert"])]
    assert problems == []


def test_monitoring_rules_cover_the_operators_alerts():
    """Uplink, spool, drops, quarantine, clock, DLQ, MQTT and agent-down alerts all exist."""
    alerts = {rule["alert"] for rule in rules()}
    assert alerts >= {
        "EdgeAgentDown", "EdgeAgentAbsent", "EdgeAgentUplinkDown", "EdgeAgentSpoolFilling",
        "EdgeAgentSpoolNearlyFull", "EdgeAgentRecordsDropped", "EdgeAgentSpoolQuarantineGrowing",
        "EdgeAgentClockAhead", "EdgeAgentDeadLettersRising", "EdgeAgentMqttDisconnected",
    }  # fmt: skip


def test_monitoring_every_alert_has_severity_and_text():
    """Each alert has a severity of a closed set, a summary and a description."""
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_monitoring_spool_alerts_compare_with_the_limit_the_agent_exports():
    """No spool limit is written into the rules: they divide by the agent's own gauge."""
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    for name in ("EdgeAgentSpoolFilling", "EdgeAgentSpoolNearlyFull"):
        assert "edge_agent_spool_max_size_bytes" in exprs[name], name
    assert not any(re.search(r"\b\d{9,}\b", expr) for expr in exprs.values())


# ---------------------------------------------------------------- the dashboard
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_monitoring_dashboard_uses_only_exported_metrics():
    """Every panel query and variable selects metrics the agent exports, with real label values."""
    problems = []
    for panel in panels():
        for target in panel["targets"]:
            problems += check_expr(target["expr"], f"panel {panel['title']!r}")
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            (metric,) = re.findall(r"label_values\(([a-z_:]+)", variable["definition"])
            if metric not in EXPORTED:
                problems.append(f"variable {variable['name']}: {metric} is not exported")
    assert problems == []


def test_monitoring_dashboard_shows_what_operators_ask():
    """Rates, spool depth and age, drops and DLQ by reason, uplink/MQTT, CPU/RSS and clock."""
    used = {name for p in panels() for t in p["targets"] for name in metric_names(t["expr"])}
    assert used >= {
        "edge_agent_mqtt_messages_received_total", "edge_agent_records_forwarded_total",
        "edge_agent_spool_records", "edge_agent_spool_bytes",
        "edge_agent_spool_oldest_age_seconds", "edge_agent_records_dropped_total",
        "edge_agent_records_rejected_total", "edge_agent_uplink_up", "edge_agent_mqtt_connected",
        "process_cpu_seconds_total", "process_resident_memory_bytes",
        "edge_agent_clock_ahead_of_kafka_seconds",
    }  # fmt: skip
    by_reason = {
        name
        for p in panels()
        for t in p["targets"]
        if "by (reason)" in t["expr"]
        for name in metric_names(t["expr"])
    }
    assert {"edge_agent_records_dropped_total", "edge_agent_records_rejected_total"} <= by_reason


def test_monitoring_dashboard_is_portable():
    """Queries use the data-source variable, panel ids are unique, panels fit the 24-wide grid."""
    board = dashboard()
    assert board["uid"] == "edge-agent"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], panel["title"]
            assert 'instance=~"$instance"' in target["expr"], panel["title"]


# ---------------------------------------------------------------- one source for both installs
@pytest.mark.parametrize(
    ("bare", "chart"),
    [(BARE_RULES, RULES), (BARE_DASHBOARD, DASHBOARD)],
    ids=["rules", "dashboard"],
)
def test_monitoring_bare_install_files_are_the_charts(bare, chart):
    """deploy/ holds exactly the chart's files (symlinks; a copy must stay byte-identical)."""
    assert bare.read_bytes() == chart.read_bytes()
