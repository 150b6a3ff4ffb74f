"""Every PromQL expression that the alert rules and the Grafana dashboard run, ready to query.

The offline tests parse them with promtool; a test against a real Prometheus scraping the
service can run each one and expect at least one series back::

    from tests.alerting.expressions import alerting_expressions

    for promql in alerting_expressions():
        assert query(promql), promql

For that, the service must have served traffic that creates every series: successful and
failed requests, a shed request (queue full), detections on a frame from a camera source (so
the region, source and presence series exist) and a synthetic model (the synthetic-model
alert's signal is `phone_detection_model_info{synthetic="true"}`).

Alert expressions are given as their *signal*: the threshold comparison is stripped
(`x > 0.1` gives `x`) and `absent(s)` gives `s`, because an alert that is not firing returns
nothing. `alerting_rules()` has the full rules for tests that wait for an alert to fire.
"""

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTING_DIR = REPO_ROOT / "alerting"
RULES_FILE = ALERTING_DIR / "rules" / "phone-detector.rules.yml"
DASHBOARD_FILE = ALERTING_DIR / "grafana" / "dashboards" / "phone-detector.json"

# Values for the dashboard's template variables when its queries run outside Grafana.
GRAFANA_VARIABLES: dict[str, str] = {
    "job": "phone-detector",
    "instance": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}

_THRESHOLD = re.compile(
    r"^(?P<signal>.+?)\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?"
    r"(?P<threshold>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$",
    re.DOTALL,
)
_ABSENT = re.compile(r"^absent\((?P<signal>.+)\)$", re.DOTALL)
_SET_OPERATOR = re.compile(r"\b(?:and|or|unless)\b")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from, e.g. `alert HighErrorRate`."""

    origin: str
    promql: str


# libyaml's loader when PyYAML was built with it: the rule test file is large for pure Python.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def load_yaml(path: Path) -> Any:
    """The parsed YAML file, read once per process; callers must not mutate it."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)


def _rules() -> list[dict[str, Any]]:
    document = load_yaml(RULES_FILE)
    return [rule for group in document["groups"] for rule in group["rules"]]


def recording_rules() -> list[dict[str, Any]]:
    """The recording rules of the rules file, as parsed from YAML, in file order."""
    return [rule for rule in _rules() if "record" in rule]


def alerting_rules() -> list[dict[str, Any]]:
    """The alerting rules of the rules file, as parsed from YAML, in file order."""
    return [rule for rule in _rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard JSON model."""
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return loaded


def signal_expression(alert_expr: str) -> str:
    """The series an alert compares: `<signal> <op> <number>` or `absent(<signal>)` -> signal.

    Raises ValueError for any other shape, so every alert stays checkable against a scrape.
    """
    expr = alert_expr.strip()
    absent = _ABSENT.match(expr)
    if absent:
        return absent.group("signal").strip()
    compared = _THRESHOLD.match(expr)
    if compared is None:
        raise ValueError(f"not `<signal> <op> <number>` nor `absent(<signal>)`: {expr!r}")
    signal = compared.group("signal").strip()
    if _SET_OPERATOR.search(signal):
        # With and/or/unless the trailing comparison no longer applies to the whole expression.
        raise ValueError(f"set operator in an alert signal: {expr!r}")
    return signal


def substitute_grafana_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace `$name` and `${name}` with GRAFANA_VARIABLES (or `values`); unknown names raise."""
    table = GRAFANA_VARIABLES if values is None else values

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in table:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return table[name]

    return _VARIABLE.sub(replace, expr)


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard except rows, including panels nested in collapsed rows."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        if panel.get("type") == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def dashboard_expressions() -> list[Expression]:
    """Each dashboard target's query, with its template variables substituted."""
    return [
        Expression(
            origin=f"panel {panel['title']!r} target {target['refId']}",
            promql=substitute_grafana_variables(target["expr"]),
        )
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def rule_expressions() -> list[Expression]:
    """Recording rule expressions, then each alert's signal expression."""
    recorded = [
        Expression(origin=f"record {rule['record']}", promql=rule["expr"].strip())
        for rule in recording_rules()
    ]
    alerts = [
        Expression(origin=f"alert {rule['alert']}", promql=signal_expression(rule["expr"]))
        for rule in alerting_rules()
    ]
    return recorded + alerts


def labelled_expressions() -> list[Expression]:
    """Rule and dashboard expressions with their origins; the first origin wins on repeats."""
    seen: set[str] = set()
    unique: list[Expression] = []
    for expression in rule_expressions() + dashboard_expressions():
        if expression.promql not in seen:
            seen.add(expression.promql)
            unique.append(expression)
    return unique


def alerting_expressions() -> list[str]:
    """Every distinct PromQL expression of the rules and the dashboard (see the module doc)."""
    return [expression.promql for expression in labelled_expressions()]
