"""Write deploy/k8s/prometheusrule.yaml from alerting/rules/phone-detector.rules.yml.

kustomize reads no file outside deploy/k8s/, and the Prometheus Operator wants the rules
inside a PrometheusRule object, so the rules are embedded: the rules file stays the source
(promtool checks and unit-tests it) and `tests/deploy/` fails whenever the two differ.
After editing the rules file, run::

    .venv/bin/python -m tests.deploy.render
"""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "alerting" / "rules" / "phone-detector.rules.yml"
PROMETHEUS_RULE_FILE = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from alerting/rules/phone-detector.rules.yml by `python -m tests.deploy.render`;
# do not edit: tests/deploy/ fails when the two differ. The runbooks are in alerting/README.md.
# Your Prometheus must select this object: kube-prometheus-stack's default ruleSelector is
# `release: <helm release name>`; change the label below to match.
"""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as `|` blocks, as in the rules file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule object that carries `rules` (a parsed rules file)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "phone-detector",
            "labels": {
                "app.kubernetes.io/name": "phone-detector",
                "app.kubernetes.io/part-of": "phone-detector",
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": rules["groups"]},
    }


def render() -> str:
    """The text of deploy/k8s/prometheusrule.yaml for the current rules file."""
    rules = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    body = yaml.dump(
        prometheus_rule(rules),
        Dumper=_BlockDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return HEADER + body


def main() -> None:
    PROMETHEUS_RULE_FILE.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
