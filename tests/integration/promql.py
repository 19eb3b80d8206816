"""The PromQL that operators run: every expression of the Grafana dashboard and the alert rules.

>>> sorted(metric_names('sum by (le) (rate(a_bucket{job=~"x"}[1m])) / ignoring(x) b offset 5m > 1e-3'))
['a_bucket', 'b']
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "streamrec.json"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "streamrec.rules.yml"
RULES_TESTS = PROMETHEUS_DIR / "streamrec.rules.test.yml"
JOB = "streamrec"

#: What Grafana puts in place of its variables when it sends a query (longest names first).
GRAFANA_VARIABLES = {"${job}": JOB, "$job": JOB, "$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
#: Series Prometheus makes itself rather than scraping them.
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE"}

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}


def load_dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row, including those inside collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.extend(panel.get("panels", []))
        if panel["type"] != "row":
            out.append(panel)
    return out


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


def dashboard_exprs() -> dict[str, list[str]]:
    """Panel title -> its queries, as Grafana would send them."""
    return {p["title"]: [substitute(t["expr"]) for t in p.get("targets", [])] for p in panels(load_dashboard())}


def rule_exprs() -> dict[str, str]:
    """Alert (or recording rule) name -> its expression."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule.get("alert") or rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (good enough for the expressions we write: no metric
    named like a function, no ``{__name__=...}`` selectors)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings, then what can only hold label names or durations
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    tokens = re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?", bare)
    return {m.group(1) for m in tokens if m.group(2) is None and m.group(1).lower() not in _KEYWORDS}
