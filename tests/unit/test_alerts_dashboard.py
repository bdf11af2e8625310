"""The alert rules and the Grafana dashboard in deploy/: promtool checks the
rules and runs their unit tests, and every metric the dashboard and the rules
query is one a live Labeler exports (names read from its /metrics)."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import pytest
import yaml

from labeler.v1 import config_pb2
from tests.support.labeler_support import BackgroundLoop
from tests.support.observability_support import exported_names, require_prometheus_tool, scrape

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/labeler-alerts.yaml"
RULE_TESTS = sorted((REPO / "deploy/prometheus").glob("*_test.yaml"))
DASHBOARD = REPO / "deploy/grafana/labeler-dashboard.json"
METRIC = re.compile(r"\b(labeler_[a-z0-9_]+)\b")
ALERTS = {
    "LabelerHighFailureRatio",
    "LabelerRpcErrors",
    "LabelerHighLatency",
    "LabelerLabelUnavailable",
    "LabelerShadowDisagreement",
}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    promtool = require_prometheus_tool("promtool")
    return subprocess.run([promtool, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules():
    done = _promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_rule_unit_tests_pass_and_cover_every_alert():
    assert RULE_TESTS, "no deploy/prometheus/*_test.yaml"
    done = _promtool("test", "rules", *(p.name for p in RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert rules == ALERTS
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a case where the alert really fires
    }
    assert tested == ALERTS, f"alerts without a firing unit test: {ALERTS - tested}"


def test_promtool_rule_tests_fail_on_a_wrong_expectation(tmp_path):
    """The unit tests can fail: a wrong expected label makes promtool fail."""
    (tmp_path / RULES.name).write_text(RULES.read_text(encoding="utf-8"), encoding="utf-8")
    broken = RULE_TESTS[0].read_text(encoding="utf-8").replace("label: 影视", "label: 美妆", 1)
    (tmp_path / "broken_test.yaml").write_text(broken, encoding="utf-8")
    promtool = require_prometheus_tool("promtool")
    done = subprocess.run(
        [promtool, "test", "rules", "broken_test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode != 0


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Metric names a live Labeler exports on /metrics (no model server needed)."""
    from labeler.server import create_server

    config = config_pb2.LabelerConfig(default_target="127.0.0.1:9", version_poll_interval_ms=5000)
    config.labels.add(label="影视", model="movie")
    loop = BackgroundLoop()
    server = loop.run(create_server(config, metrics_port=0))
    try:
        return exported_names(scrape(server.app.metrics_port))
    finally:
        loop.run(server.stop(None))
        loop.run(server.app.close())
        loop.close()


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = []
    for panel in dashboard["panels"]:
        for panel_or_child in [panel, *panel.get("panels", [])]:
            exprs += [t["expr"] for t in panel_or_child.get("targets", [])]
    return exprs


def test_dashboard_is_grafana_json_over_exported_metrics(exported):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    used = {name for e in exprs for name in METRIC.findall(e)}
    unknown = {n for n in used if n not in exported}
    assert not unknown, f"the dashboard queries metrics the Labeler does not export: {sorted(unknown)}"
    # What the issue asks the dashboard to show.
    for needed in (
        "labeler_rpc_requests_total",  # request rate
        "labeler_label_latency_seconds_bucket",  # latency by label
        "labeler_label_results_total",  # failures by label and code
        "labeler_predict_batch_documents_bucket",  # coalescing batch sizes
        "labeler_cache_lookups_total",  # cache hit ratio
        "labeler_shadow_agreements_total",  # shadow agreement
    ):
        assert needed in used, needed


def test_alert_rules_query_exported_metrics(exported):
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    used = {n for g in rules["groups"] for r in g["rules"] for n in METRIC.findall(r["expr"])}
    assert used and used <= exported, sorted(used - exported)


def test_metric_name_check_can_fail(exported):
    assert "labeler_no_such_metric_total" not in exported
    assert "labeler_rpc_requests_total" in exported
