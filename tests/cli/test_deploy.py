"""The example Grafana dashboard and Prometheus alert rules use only metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from gateway.metric_catalogue import CATALOGUE

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
_METRIC = re.compile(r"\bconduct_gateway_[a-z0-9_]+")


def exported_names() -> set[str]:
    names = {"conduct_gateway_build_info"}
    for spec in CATALOGUE.values():
        if spec.kind == "histogram":
            names |= {f"{spec.exposed}_{suffix}" for suffix in ("bucket", "sum", "count")}
        else:
            names.add(spec.exposed)
    return names


def alert_rules() -> list[dict[str, object]]:
    document = YAML(typ="safe").load((DEPLOY / "prometheus-alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_used_is_exported(source: str) -> None:
    expressions = (
        [str(rule["expr"]) for rule in alert_rules()] if source == "alerts" else dashboard_expressions()
    )
    used = {name for expression in expressions for name in _METRIC.findall(expression)}
    assert used, "no gateway metric is used"
    assert used <= exported_names(), f"not exported: {sorted(used - exported_names())}"


def test_the_alerts_the_operations_guide_promises_exist() -> None:
    watched = " ".join(str(rule["expr"]) for rule in alert_rules())
    for metric in (
        "spool_oldest_message_age_seconds",  # queue age
        'spool_messages{state="deferred"}',  # deferred count
        "policy_reload_refused",  # reload refused
        "policy_registry_unreadable",  # registry not decryptable
        "policy_workers_restarts_total",  # worker restarts
    ):
        assert metric in watched, metric
    for rule in alert_rules():
        assert {"alert", "expr", "labels", "annotations"} <= set(rule)
