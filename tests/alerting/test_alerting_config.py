"""Offline checks of alerting/: promtool, amtool, rule hygiene, dashboard, compose and Dockerfile.

promtool and amtool come from the Debian packages `prometheus` and `prometheus-alertmanager`
(scripts/system-deps.sh installs them). Without them these tests fail under CI=true and are
skipped elsewhere.
"""

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerting.expressions import (
    ALERTING_DIR,
    DASHBOARD_FILE,
    REPO_ROOT,
    RULES_FILE,
    alerting_rules,
    dashboard,
    dashboard_panels,
    labelled_expressions,
    load_yaml,
    recording_rules,
    signal_expression,
)
from tests.alerting.stack_configs import (
    alertmanager_config,
    prometheus_config,
    rules_with_short_for,
    write_yaml,
)
from tests.utils.system import require_binary

RULE_TESTS_FILE = ALERTING_DIR / "tests" / "phone-detector.rules.test.yml"
ALERTMANAGER_FILE = ALERTING_DIR / "alertmanager.yml"
PROMETHEUS_FILES = [ALERTING_DIR / "prometheus.yml", ALERTING_DIR / "prometheus.compose.yml"]
README_FILE = ALERTING_DIR / "README.md"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

SEVERITIES = {"critical", "warning", "info"}
# The receiver each kind of alert must reach (alertmanager.yml's routing tree).
RECEIVER_BY_SEVERITY = {
    "critical": "oncall-critical",
    "warning": "team-warning",
    "info": "default-webhook",
}
INVIGILATION_RECEIVER = "invigilator-webhook"

# The service's exported metric names (the metric contract); histograms add _bucket/_sum/_count.
SERVICE_METRICS = {
    "phone_detection_requests_total",
    "phone_detection_latency_seconds",
    "phone_detection_devices_current",
    "phone_detection_devices_per_image",
    "phone_detection_model_load",
    "phone_detection_model_info",
    "phone_detection_queue_depth",
    "phone_detection_queue_capacity",
    "phone_detection_queue_wait_duration_seconds",
    "phone_detection_batch_size",
    "phone_detection_inference_duration_seconds",
    "phone_detection_batch_window_seconds",
    "phone_detection_images_per_request",
    "phone_detection_frames_rejected_total",
    "phone_detection_errors_total",
    "phone_detection_devices_by_region_total",
    "phone_detection_devices_by_source_total",
    "phone_detection_presence_active",
    "phone_detection_source_up",
    "phone_detection_source_frames_sampled_total",
    "phone_detection_source_frames_skipped_total",
    "phone_detection_source_reconnects_total",
}
HISTOGRAMS = {
    "phone_detection_latency_seconds",
    "phone_detection_devices_per_image",
    "phone_detection_queue_wait_duration_seconds",
    "phone_detection_batch_size",
    "phone_detection_inference_duration_seconds",
    "phone_detection_images_per_request",
}
COMPOSE_SERVICES = {"phone-detector", "prometheus", "alertmanager", "grafana", "otel-collector"}
# Written by whoever owns otel/; checked separately so its absence does not hide other faults.
COLLECTOR_CONFIG = "otel/collector.yaml"

_METRIC_TOKEN = re.compile(r"\b(phone_detection_[a-z_]+|process_[a-z_]+)\b")
_RECORDED_TOKEN = re.compile(r"\b([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b")


def _binary(name: str) -> str:
    return require_binary(name)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _yaml(path: Path) -> Any:
    return load_yaml(path)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to -."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _readme_anchors() -> set[str]:
    text = README_FILE.read_text(encoding="utf-8")
    return {_anchor(match) for match in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE)}


def _rule_test_cases() -> Iterator[dict[str, Any]]:
    for group in _yaml(RULE_TESTS_FILE)["tests"]:
        yield from group.get("alert_rule_test", [])


ALERT_NAMES = [rule["alert"] for rule in alerting_rules()]
RECORD_NAMES = [rule["record"] for rule in recording_rules()]


# --- promtool and amtool -------------------------------------------------------------------


@pytest.mark.parametrize("config", PROMETHEUS_FILES, ids=lambda path: path.name)
def test_prometheus_config_passes_promtool(config: Path) -> None:
    result = _run(_binary("promtool"), "check", "config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_promtool_check() -> None:
    result = _run(_binary("promtool"), "check", "rules", str(RULES_FILE))

    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = _run(_binary("promtool"), "test", "rules", str(RULE_TESTS_FILE))

    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_passes_amtool() -> None:
    result = _run(_binary("amtool"), "check-config", str(ALERTMANAGER_FILE))

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", alerting_rules(), ids=ALERT_NAMES)
def test_alert_routes_to_its_receiver(rule: dict[str, Any]) -> None:
    labels = {"alertname": rule["alert"], "job": "phone-detector", **rule["labels"]}
    expected = (
        INVIGILATION_RECEIVER
        if labels.get("team") == "invigilation"
        else RECEIVER_BY_SEVERITY[labels["severity"]]
    )

    result = _run(
        _binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_FILE}",
        f"--verify.receivers={expected}",
        *(f"{name}={value}" for name, value in labels.items()),
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool has no offline PromQL parser, so each expression is checked as a recording rule."""
    document = {
        "groups": [
            {
                "name": "parse-check",
                "rules": [
                    {"record": f"check:expression_{index}:parse", "expr": expression.promql}
                    for index, expression in enumerate(labelled_expressions())
                ],
            }
        ]
    }
    rules_path = tmp_path / "parse-check.rules.yml"
    rules_path.write_text(yaml.safe_dump(document), encoding="utf-8")

    result = _run(_binary("promtool"), "check", "rules", str(rules_path))

    assert result.returncode == 0, result.stdout + result.stderr


# --- rule hygiene --------------------------------------------------------------------------


def test_established_alerts_keep_their_names() -> None:
    assert {"HighErrorRate", "SlowDetection"} <= set(ALERT_NAMES)


@pytest.mark.parametrize("rule", alerting_rules(), ids=ALERT_NAMES)
def test_alert_has_for_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
    assert "for" in rule
    assert rule["labels"]["severity"] in SEVERITIES
    for annotation in ("summary", "description", "runbook_url"):
        assert rule["annotations"].get(annotation, "").strip(), annotation


@pytest.mark.parametrize("rule", alerting_rules(), ids=ALERT_NAMES)
def test_alert_runbook_points_to_a_readme_section(rule: dict[str, Any]) -> None:
    path, _, anchor = rule["annotations"]["runbook_url"].partition("#")

    assert path == "alerting/README.md"
    assert anchor == rule["alert"].lower()
    assert anchor in _readme_anchors()


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_alert_has_firing_and_silent_unit_tests(alert: str) -> None:
    cases = [case for case in _rule_test_cases() if case["alertname"] == alert]

    assert any(case.get("exp_alerts") for case in cases), f"{alert}: no case where it fires"
    assert any(not case.get("exp_alerts") for case in cases), f"{alert}: no silent case"


@pytest.mark.parametrize("rule", alerting_rules(), ids=ALERT_NAMES)
def test_alert_expression_has_a_checkable_signal(rule: dict[str, Any]) -> None:
    assert signal_expression(rule["expr"])


def test_recording_rules_are_named_level_metric_operations() -> None:
    for name in RECORD_NAMES:
        level, metric, operations = name.split(":")
        assert "job" in level.split("_") or level == "instance", name
        assert metric.startswith("phone_detection_"), name
        assert not metric.endswith("_total"), f"{name}: drop _total under rate()"
        assert operations, name


def test_every_recording_rule_has_a_unit_test() -> None:
    tested = {
        case["expr"].strip()
        for group in _yaml(RULE_TESTS_FILE)["tests"]
        for case in group.get("promql_expr_test", [])
    }
    # A rule is covered when its own name is queried or a tested rule is built from it.
    untested = [
        name
        for name in RECORD_NAMES
        if name not in tested
        and not any(name in rule["expr"] for rule in recording_rules() if rule["record"] in tested)
    ]

    assert not untested


def test_expressions_use_only_contract_metrics_and_defined_recordings() -> None:
    histogram_series = {
        f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
    }
    known = SERVICE_METRICS | histogram_series
    unknown: list[str] = []
    for expression in labelled_expressions():
        without_recordings = _RECORDED_TOKEN.sub(" ", expression.promql)
        for token in _METRIC_TOKEN.findall(without_recordings):
            if token.startswith("phone_detection_") and token not in known:
                unknown.append(f"{expression.origin}: {token}")
        for token in _RECORDED_TOKEN.findall(expression.promql):
            if token not in RECORD_NAMES:
                unknown.append(f"{expression.origin}: recording {token}")

    assert not unknown


# --- dashboard -----------------------------------------------------------------------------


def test_dashboard_selects_datasource_job_and_instance_by_variable() -> None:
    model = dashboard()
    variables = {variable["name"]: variable for variable in model["templating"]["list"]}

    assert model["schemaVersion"] >= 39
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["type"] == "query"
    assert variables["instance"]["type"] == "query"
    assert variables["instance"]["includeAll"] is True


def test_every_dashboard_panel_queries_through_the_datasource_variable() -> None:
    panels = dashboard_panels()

    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = dashboard()["panels"]
    ids = [panel["id"] for panel in panels]

    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_has_the_operators_panels() -> None:
    titles = {panel["title"] for panel in dashboard_panels()}
    expected = {
        "Request rate by status",
        "Error ratio",
        "Detection latency p50 / p95 / p99",
        "Detection latency heatmap",
        "Phones per image",
        "Phones by region",
        "Queue depth vs capacity",
        "Batch size",
        "Inference time per batch",
        "Rejected / shed rate",
        "CPU",
        "Memory",
        "Model loaded",
        "Model info",
    }

    assert expected <= titles
    heatmap = next(p for p in dashboard_panels() if p["title"] == "Detection latency heatmap")
    assert heatmap["type"] == "heatmap"
    assert "phone_detection_latency_seconds_bucket" in heatmap["targets"][0]["expr"]


def test_grafana_provisioning_points_at_the_dashboard_mount() -> None:
    datasources = _yaml(ALERTING_DIR / "grafana/provisioning/datasources/prometheus.yml")
    providers = _yaml(ALERTING_DIR / "grafana/provisioning/dashboards/phone-detector.yml")
    compose = _yaml(COMPOSE_FILE)

    assert datasources["datasources"][0]["type"] == "prometheus"
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards_path = providers["providers"][0]["options"]["path"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./alerting/grafana/dashboards:{dashboards_path}:ro" in mounts
    assert json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))["uid"] == "phone-detector"


# --- Prometheus configs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "service", "alertmanager"),
    [
        (ALERTING_DIR / "prometheus.yml", "127.0.0.1:8000", "127.0.0.1:9093"),
        (ALERTING_DIR / "prometheus.compose.yml", "phone-detector:8000", "alertmanager:9093"),
    ],
    ids=["loopback", "compose"],
)
def test_prometheus_scrapes_the_service_and_loads_the_rules(
    config: Path, service: str, alertmanager: str
) -> None:
    document = _yaml(config)
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    targets = [t for sc in jobs["phone-detector"]["static_configs"] for t in sc["targets"]]
    am_targets = [
        t
        for am in document["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]

    assert targets == [service]
    assert am_targets == [alertmanager]
    assert any(RULES_FILE in config.parent.glob(pattern) for pattern in document["rule_files"])


# --- docker-compose, Dockerfile ------------------------------------------------------------


def _bind_mounts() -> list[tuple[str, str, str]]:
    """(service, host path relative to the repository, container path) of each bind mount."""
    mounts = []
    for name, service in _yaml(COMPOSE_FILE)["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                mounts.append((name, source.removeprefix("./"), target))
    return mounts


def test_compose_defines_the_whole_stack_on_the_usual_ports() -> None:
    services = _yaml(COMPOSE_FILE)["services"]
    published = {
        name: {port.split(":")[0] for port in service.get("ports", [])}
        for name, service in services.items()
    }

    assert set(services) == COMPOSE_SERVICES
    assert services["phone-detector"]["build"]["dockerfile"] == "Dockerfile"
    assert published["phone-detector"] == {"8000"}
    assert published["prometheus"] == {"9090"}
    assert published["alertmanager"] == {"9093"}
    assert published["grafana"] == {"3000"}
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")


def test_compose_bind_mounts_exist_in_the_repository() -> None:
    missing = [
        f"{service}: {source}"
        for service, source, _ in _bind_mounts()
        if source != COLLECTOR_CONFIG and not (REPO_ROOT / source).exists()
    ]

    assert not missing


def test_compose_prometheus_gets_the_compose_config_and_the_rules() -> None:
    prometheus = {
        target: source for service, source, target in _bind_mounts() if service == "prometheus"
    }

    assert prometheus["/etc/prometheus/prometheus.yml"] == "alerting/prometheus.compose.yml"
    assert prometheus["/etc/prometheus/rules"] == "alerting/rules"


def test_compose_collector_config_exists() -> None:
    if not (REPO_ROOT / COLLECTOR_CONFIG).exists():
        pytest.skip(f"{COLLECTOR_CONFIG} is not written yet; docker-compose.yml mounts it")
    assert any(source == COLLECTOR_CONFIG for _, source, _ in _bind_mounts())


def test_dockerfile_runs_the_service_as_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [
        line.split(None, 1) for line in text.splitlines() if re.match(r"^[A-Z]+\s", line)
    ]
    users = [argument.strip() for keyword, argument in instructions if keyword == "USER"]

    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert users, "no USER instruction"
    assert users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)
    assert 'ENTRYPOINT ["phone-detector"]' in text
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]' in text
    assert "uv sync --frozen" in text


def test_dockerignore_keeps_what_the_image_build_copies() -> None:
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert rules[0] == "*"
    for needed in ("pyproject.toml", "uv.lock", "README.md", "app/"):
        assert f"!{needed}" in rules


def test_system_deps_script_is_valid_bash() -> None:
    result = _run("bash", "-n", str(REPO_ROOT / "scripts" / "system-deps.sh"))

    assert result.returncode == 0, result.stderr


# --- test copies for a real Prometheus and Alertmanager ------------------------------------


def test_test_copies_of_the_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    rules = write_yaml(tmp_path / "phone-detector.rules.yml", rules_with_short_for("5s"))
    prometheus = write_yaml(
        tmp_path / "prometheus.yml",
        prometheus_config(
            service_target="127.0.0.1:18000",
            alertmanager_target="127.0.0.1:19093",
            rule_file=rules,
        ),
    )
    alertmanager_document = alertmanager_config(webhook_base_url="http://127.0.0.1:15001")
    alertmanager = write_yaml(tmp_path / "alertmanager.yml", alertmanager_document)

    promtool_result = _run(_binary("promtool"), "check", "config", str(prometheus))
    amtool_result = _run(_binary("amtool"), "check-config", str(alertmanager))

    assert promtool_result.returncode == 0, promtool_result.stdout + promtool_result.stderr
    assert amtool_result.returncode == 0, amtool_result.stdout + amtool_result.stderr
    urls = [
        hook["url"]
        for receiver in alertmanager_document["receivers"]
        for hook in receiver.get("webhook_configs", [])
    ]
    assert urls
    assert all(url.startswith("http://127.0.0.1:15001/") for url in urls)
    assert all(
        set(receiver) <= {"name", "webhook_configs"}
        for receiver in alertmanager_document["receivers"]
    )
