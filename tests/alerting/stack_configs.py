"""Test copies of the alerting configs, for a real Prometheus and Alertmanager on free ports.

A test that runs the service, Prometheus and Alertmanager on loopback writes these next to
each other in a temporary folder::

    rules = tmp_path / "phone-detector.rules.yml"
    write_yaml(rules, rules_with_short_for("5s"))
    write_yaml(tmp_path / "prometheus.yml", prometheus_config(
        service_target=f"127.0.0.1:{service_port}",
        alertmanager_target=f"127.0.0.1:{alertmanager_port}",
        rule_file=rules,
    ))
    write_yaml(tmp_path / "alertmanager.yml", alertmanager_config(
        webhook_base_url=f"http://127.0.0.1:{webhook_port}",
    ))

The copies keep the real expressions, labels, routes and inhibitions; only durations, addresses
and the receivers that would leave the machine (email, WeCom, the DingTalk bridge) change.
"""

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.alerting.expressions import ALERTING_DIR, RULES_FILE, load_yaml

PROMETHEUS_FILE = ALERTING_DIR / "prometheus.yml"
ALERTMANAGER_FILE = ALERTING_DIR / "alertmanager.yml"
# The webhook receivers of alertmanager.yml all post under this base URL.
WEBHOOK_BASE_URL = "http://127.0.0.1:5001"


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    """Write `document` as YAML to `path` and return the path."""
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def rules_with_short_for(for_duration: str = "5s") -> dict[str, Any]:
    """The rules file with every alert's `for:` set to `for_duration`."""
    document: dict[str, Any] = copy.deepcopy(load_yaml(RULES_FILE))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = for_duration
    return document


def prometheus_config(
    *,
    service_target: str,
    alertmanager_target: str,
    rule_file: Path,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> dict[str, Any]:
    """prometheus.yml with the given targets, one rule file and short intervals."""
    document: dict[str, Any] = copy.deepcopy(load_yaml(PROMETHEUS_FILE))
    document["global"]["scrape_interval"] = scrape_interval
    document["global"]["evaluation_interval"] = evaluation_interval
    document["rule_files"] = [str(rule_file)]
    document["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [alertmanager_target]}]}
    ]
    for job in document["scrape_configs"]:
        if job["job_name"] == "phone-detector":
            job["static_configs"] = [{"targets": [service_target]}]
    return document


def alertmanager_config(*, webhook_base_url: str, group_wait: str = "1s") -> dict[str, Any]:
    """alertmanager.yml whose webhooks post to `webhook_base_url` (paths kept) and nowhere else.

    Email, WeCom and the DingTalk bridge are dropped; group waits and intervals are shortened
    so that a firing alert is delivered within seconds.
    """
    document: dict[str, Any] = copy.deepcopy(load_yaml(ALERTMANAGER_FILE))
    for key in [key for key in document["global"] if key.startswith(("smtp_", "wechat_"))]:
        del document["global"][key]
    for receiver in document["receivers"]:
        webhooks = [
            {**hook, "url": webhook_base_url + hook["url"].removeprefix(WEBHOOK_BASE_URL)}
            for hook in receiver.get("webhook_configs", [])
            if hook["url"].startswith(WEBHOOK_BASE_URL)
        ]
        for integration in [key for key in receiver if key.endswith("_configs")]:
            del receiver[integration]
        if webhooks:
            receiver["webhook_configs"] = webhooks
    routes = [document["route"], *document["route"].get("routes", [])]
    for route in routes:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = group_wait
    return document
