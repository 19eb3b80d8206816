"""The shipped Prometheus config and alert rules pass promtool (rules with their unit tests); the Grafana
dashboard takes its Prometheus data source as a variable and its provisioning file points at it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from streams.local.prometheus import find_binary
from tests.integration.promql import (
    DASHBOARD,
    PROMETHEUS_DIR,
    RULES,
    RULES_TESTS,
    SCRAPE_CONFIG,
    load_dashboard,
    panels,
)

pytestmark = pytest.mark.integration  # needs promtool (installed by `make setup`)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def promtool(*args: str | Path) -> str:
    out = subprocess.run(
        [str(find_binary("promtool")), *map(str, args)], cwd=PROMETHEUS_DIR, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "rules", RULES)


def test_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", RULES_TESTS)


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested


def test_scrape_config_is_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", SCRAPE_CONFIG)


def test_dashboard_uses_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    found = panels(dashboard)
    assert len({p["id"] for p in found}) == len(found), "panel ids must be unique"
    for panel in found:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]


def test_provisioning_file_loads_the_dashboard_folder() -> None:
    provisioning = yaml.safe_load((DASHBOARD.parent / "dashboards.yaml").read_text())
    (provider,) = provisioning["providers"]
    assert provisioning["apiVersion"] == 1 and provider["type"] == "file" and provider["options"]["path"]
