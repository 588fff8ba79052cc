"""deploy/prometheus-alerts.yaml: valid PromQL over metrics the code really exports."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import DEPLOY, DOCS, load_yaml

RULES = load_yaml(DEPLOY / "prometheus-alerts.yaml")
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"]]


def exported_series() -> dict[str, set[str]]:
    """Each series name engine.metrics exports, with the label names it carries."""
    from prometheus_client.metrics import MetricWrapperBase

    import engine.metrics as metrics

    series: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)
        suffixes = {
            "counter": ["_total"],
            "gauge": [""],
            "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["_sum", "_count"],
        }[metric._type]
        for suffix in suffixes:
            series[metric._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every vector selector in a PromQL expression."""
    import promql_parser

    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name for m in node.matchers.matchers}))

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def test_rules_file_has_one_group_of_named_alerts():
    """The file is a Prometheus rule file: groups of alerts, each named once."""
    names = [rule["alert"] for rule in ALERTS]
    assert names and len(names) == len(set(names))
    for rule in ALERTS:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule["alert"])
def test_alert_expression_parses_and_uses_exported_metrics(rule):
    """Each expression is valid PromQL and names only series and labels engine.metrics exports."""
    series = exported_series()
    used = selectors(rule["expr"])
    assert used, "an alert watches some metric"
    for name, labels in used:
        assert name in series, f"{rule['alert']}: {name} is not exported"
        assert labels <= series[name], f"{rule['alert']}: {name} has no label {labels - series[name]}"


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule["alert"])
def test_alert_says_how_bad_and_where_the_runbook_is(rule):
    """Each alert has a severity, a summary and a runbook link to its section of docs/deploy.md."""
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"]
    runbook = rule["annotations"]["runbook"]
    assert runbook == f"docs/deploy.md#{rule['alert'].lower()}"
    assert f"\n#### {rule['alert']}\n" in DOCS.read_text(encoding="utf-8")
    if "for" in rule:
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_alerts_cover_the_failure_modes():
    """There are alerts on queue depth, worker readiness, job failures and delivery lag."""
    used = {name for rule in ALERTS for name, _ in selectors(rule["expr"])}
    text = " ".join(rule["expr"] for rule in ALERTS)
    assert {"imagine_queue_depth", "imagine_worker_ready", "imagine_jobs_total", "imagine_job_seconds_bucket"} <= used
    assert 'phase="delivery"' in text and 'status="failed"' in text
