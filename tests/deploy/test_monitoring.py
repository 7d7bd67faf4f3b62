"""deploy/monitoring: the PrometheusRule's groups pass ``promtool check rules`` and its alerts
fire on hand-written series (``promtool test rules``, tests/deploy/monitoring_rules_test.yaml);
every PromQL expression of the Grafana dashboard parses; every metric they read is one the model
service exports (or a rule records); the ServiceMonitor selects the chart's serving Service and
names the job the canary analysis' Prometheus backend queries."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_steps.core.sections import for_model
from mlops_steps.release.prometheus import DEFAULT_SELECTOR_TEMPLATE
from tests.prometheus_server import binary

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
CHART = REPO / "deploy" / "helm" / "mlops-serving" / "templates"
UNIT_TESTS = Path(__file__).with_name("monitoring_rules_test.yaml")
#: Grafana's variables, as a query would see them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$model": "churn"}
#: PromQL words that are not metric names: functions, aggregations, keywords.
PROMQL_WORDS = {
    "abs", "and", "avg", "bool", "by", "clamp_min", "count", "group_left", "group_right",
    "histogram_quantile", "ignoring", "increase", "max", "min", "offset", "on", "or", "rate",
    "sum", "timestamp", "unless", "without", "inf", "nan",
}  # fmt: skip


def _rule_groups() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    return list(document["spec"]["groups"])


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": _rule_groups()}, sort_keys=False))
    return path


def _dashboard() -> dict[str, Any]:
    return dict(json.loads((MONITORING / "grafana-dashboard.json").read_text()))


def _dashboard_expressions() -> list[str]:
    expressions = []
    for panel in _dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            expressions.append(expr)
    return expressions


def _rule_expressions() -> list[str]:
    return [rule["expr"] for group in _rule_groups() for rule in group["rules"]]


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, label matchers, grouping labels,
    durations and PromQL's own words left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    words = re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", text)
    return {w for w in words if w.lower() not in PROMQL_WORDS}


def _exported_series() -> set[str]:
    """Every series name the service's metrics expose, from its own registry with one of each
    event recorded (serving/mlops_serving/metrics.py)."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from mlops_serving.metrics import ServingMetrics

    metrics = ServingMetrics()
    metrics.request("predict", "stable", "1", 200, 0.01)
    metrics.scored("stable", "1", 0.7)
    metrics.classified("stable", "1", {"a": 1})
    metrics.shadow_compared("2", agreed=1, disagreed=0)
    metrics.out_of_range("stable", "1", ["x"])
    metrics.log_dropped.inc()
    metrics.load_failures.labels("canary").inc()
    metrics.canary_weight.set(0.1)
    metrics.model_info.labels("stable", "1", "run").set(1)
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_rule_groups_pass_promtool_check_rules(rules_file: Path) -> None:
    checked = _promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_alerts_fire_on_hand_written_series(rules_file: Path, tmp_path: Path) -> None:
    cases = yaml.safe_load(UNIT_TESTS.read_text())
    tested = {t["alertname"] for case in cases["tests"] for t in case.get("alert_rule_test", [])}
    assert {"ServingErrorBudgetBurnFast", "ServingPredictionLogRowsDropped"} <= tested
    unit_tests = tmp_path / "rules_test.yaml"
    unit_tests.write_text(yaml.safe_dump({**cases, "rule_files": [str(rules_file)]}))
    result = _promtool("test", "rules", str(unit_tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    expressions = _dashboard_expressions()
    rules = [{"record": f"dashboard:panel_{i}:check", "expr": e} for i, e in enumerate(expressions)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in checked.stdout


def test_every_metric_read_is_exported_by_the_service_or_recorded() -> None:
    recorded = {
        rule["record"] for group in _rule_groups() for rule in group["rules"] if "record" in rule
    }
    known = _exported_series() | recorded
    read: dict[str, set[str]] = {}
    for expr in [*_rule_expressions(), *_dashboard_expressions()]:
        for name in metric_names(expr):
            read.setdefault(name, set()).add(expr)
    unknown = {name: exprs for name, exprs in read.items() if name not in known}
    assert not unknown, f"metrics neither exported nor recorded: {unknown}"
    # Each panel family of the issue is on the dashboard.
    for metric in (
        "serving_requests_total",
        "serving_request_latency_seconds_bucket",
        "serving_prediction_score_bucket",
        "serving_prediction_log_dropped_rows_total",
        "model:serving_canary_weight:max",
        "model_version:serving_shadow_agreement_ratio:rate5m",
        "model_variant_version:serving_prediction_score_ks:1h_vs_1d",
    ):
        assert any(metric in metric_names(e) for e in _dashboard_expressions()), metric


def test_metric_names_are_told_from_labels_functions_and_durations() -> None:
    expr = (
        'sum by (variant, le) (rate(serving_x_bucket{model="a b", le="+Inf"}[5m])) '
        "/ ignoring (le) group_left a:b:c offset 1h > 0.5"
    )
    assert metric_names(expr) == {"serving_x_bucket", "a:b:c"}


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "serving_model_info" in variables["model"]["definition"]
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"])


def _chart_services() -> list[dict[str, Any]]:
    """The chart's Services (its templates' values quoted, so they read as YAML)."""
    found = []
    for path in sorted(CHART.glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Service"]
    return found


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        if expression["operator"] == "Exists" and not present:
            return False
        if expression["operator"] == "DoesNotExist" and present:
            return False
    return True


def test_the_service_monitor_scrapes_each_pod_once_as_the_job_the_analysis_queries() -> None:
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    assert (monitor["apiVersion"], monitor["kind"]) == (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
    )
    spec = monitor["spec"]
    services = _chart_services()
    selected = [s for s in services if _selects(spec["selector"], s["metadata"]["labels"])]
    # The Service in front of both tracks, not gateway-api mode's per-track ones (same pods).
    assert [s["metadata"]["name"] for s in selected] == ["{{ .Values.name }}-serving"]
    assert len(services) > len(selected)
    (service,) = selected
    assert service["metadata"]["namespace"] == "{{ .Values.namespace }}"
    values = yaml.safe_load((CHART.parent / "values.yaml").read_text())
    assert spec["namespaceSelector"]["matchNames"] == [values["namespace"]]
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # Prometheus names the job after the Service: what PrometheusSource selects by default.
    rendered = service["metadata"]["name"].replace("{{ .Values.name }}", "churn")
    assert for_model(DEFAULT_SELECTOR_TEMPLATE, "churn") == rendered
    (model,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "model"]
    assert re.fullmatch(model["regex"], rendered).group(1) == "churn"  # type: ignore[union-attr]
