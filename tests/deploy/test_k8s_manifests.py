"""Offline checks of deploy/k8s/: Kubernetes schemas, CRD structure, and cross-references.

Built-in kinds (Deployment, Service, HPA, PDB, DaemonSet, ConfigMap, ...) are validated
against the Kubernetes OpenAPI-derived JSON schemas that the `kubernetes-validate` package
ships (no network), in strict mode (unknown fields fail), for the oldest Kubernetes these
manifests support and for the newest the package knows.

No installed package ships the schemas of the custom resources (Prometheus Operator's
ServiceMonitor and PrometheusRule, KEDA's ScaledObject), and none are vendored here; their
structure is checked field by field instead: required fields, selectors that match the
labels of what they select, ports named as the Service and container name them, and metric
names that the service exports (README.md's metrics table). The kustomizations are checked
structurally (every file listed exists, every manifest is listed, patches target what exists,
the model-pvc JSON patch is applied here and the result schema-validated); where `kubectl`
is installed, its built-in kustomize also builds the base and an overlay with both
components, and the output is schema-validated (skipped without kubectl: it is not one of
the system packages `make test` installs).
"""

import copy
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from app.config import Settings
from tests.deploy.render import PROMETHEUS_RULE_FILE, RULES_FILE, render
from tests.utils.system import require_binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
README = ROOT / "README.md"

# Oldest supported: autoscaling/v2 (1.23), internalTrafficPolicy (GA 1.26), and the
# restricted Pod Security profile all hold from here on.
OLDEST_KUBERNETES = "1.27"
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, latest_version())

CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
APP = "phone-detector"
_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# --- loading -------------------------------------------------------------------------------


@cache
def _load_all(path: Path) -> tuple[Any, ...]:
    return tuple(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)


def _load(path: Path) -> Any:
    (document,) = _load_all(path)
    return document


def _kustomization(folder: Path = K8S) -> dict[str, Any]:
    result: dict[str, Any] = _load(folder / "kustomization.yaml")
    return result


def _generated_configmaps() -> list[dict[str, Any]]:
    """The ConfigMaps the base's configMapGenerator makes (before kustomize's hash suffix)."""
    maps = []
    for generator in _kustomization().get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, source = entry.rpartition("=")
            data[key or Path(source).name] = (K8S / source).read_text(encoding="utf-8")
        labels = generator.get("options", {}).get("labels", {})
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"], "labels": labels},
                "data": data,
            }
        )
    return maps


def _base_documents() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/k8s` applies (generated ConfigMaps included)."""
    docs: list[dict[str, Any]] = []
    for resource in _kustomization()["resources"]:
        docs.extend(_load_all(K8S / resource))
    return docs + _generated_configmaps()


def _one(kind: str, name: str = APP) -> dict[str, Any]:
    found = [
        doc for doc in _base_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _deployment() -> dict[str, Any]:
    return _one("Deployment")


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _app_container(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = _pod_spec(deployment or _deployment())["containers"]
    (container,) = [c for c in containers if c["name"] == APP]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var.get("value", "") for var in container.get("env", [])}


def _keda() -> dict[str, Any]:
    (scaled,) = _load_all(K8S / "components" / "keda" / "scaledobject.yaml")
    return dict(scaled)


def _adapter_rules() -> list[dict[str, Any]]:
    configmap = _load(K8S / "prometheus-adapter" / "configmap.yaml")
    rules: list[dict[str, Any]] = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    return rules


def _readme_metrics() -> set[str]:
    text = README.read_text(encoding="utf-8")
    return set(re.findall(r"^\| `(phone_detection_[a-z_]+)` \|", text, re.MULTILINE))


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity (`2`, `250m`, `1Gi`, `512Mi`) as a number."""
    text = str(value)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    assert match, f"not a Prometheus duration: {duration}"
    number, unit = match.groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _apply_json_patch(document: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/remove/replace, enough for the component patches here."""
    result = copy.deepcopy(document)
    for op in ops:
        *parents, last = op["path"].lstrip("/").split("/")
        target: Any = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "remove":
            if isinstance(target, list):
                del target[int(last)]
            else:
                assert last in target, f"remove of missing {op['path']}"
                del target[last]
        elif op["op"] in ("add", "replace"):
            if isinstance(target, list):
                if last == "-":
                    target.append(op["value"])
                elif op["op"] == "add":
                    target.insert(int(last), op["value"])
                else:
                    target[int(last)] = op["value"]
            else:
                assert op["op"] == "add" or last in target, f"replace of missing {op['path']}"
                target[last] = op["value"]
        else:
            raise AssertionError(f"unsupported op {op['op']}")
    return result


def _model_pvc_deployment() -> dict[str, Any]:
    component = K8S / "components" / "model-pvc"
    (patch,) = _kustomization(component)["patches"]
    ops = yaml.safe_load((component / patch["path"]).read_text(encoding="utf-8"))
    return _apply_json_patch(_deployment(), ops)


def _binary(name: str) -> str:
    return require_binary(name)


def _schema_checked() -> list[tuple[str, dict[str, Any]]]:
    """Every built-in object of the base, the components and the adapter config, by id."""
    docs = [
        *_base_documents(),
        *_load_all(K8S / "prometheus-adapter" / "configmap.yaml"),
        *_load_all(K8S / "components" / "model-pvc" / "pvc.yaml"),
    ]
    named = [(f"{d['kind']}/{d['metadata']['name']}", d) for d in docs]
    named.append(("Deployment/phone-detector+model-pvc", _model_pvc_deployment()))
    return [(name, doc) for name, doc in named if (doc["apiVersion"], doc["kind"]) not in CRD_KINDS]


# --- the kustomizations --------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_every_listed_file_exists() -> None:
    kustomization = _kustomization()
    listed = set(kustomization["resources"])
    for resource in listed:
        assert (K8S / resource).is_file(), resource
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == listed
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (K8S / entry.rpartition("=")[2]).is_file(), entry


@pytest.mark.parametrize("component", ["keda", "model-pvc"])
def test_components_list_files_that_exist(component: str) -> None:
    folder = K8S / "components" / component
    kustomization = _kustomization(folder)
    assert kustomization["kind"] == "Component"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    for resource in kustomization.get("resources", []):
        assert (folder / resource).is_file(), resource
    for patch in kustomization.get("patches", []):
        assert "patch" in patch or (folder / patch["path"]).is_file(), patch


def test_every_object_has_a_name_and_the_app_labels() -> None:
    for doc in _base_documents():
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == APP, doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"], "the kustomization sets the namespace"
    assert _kustomization()["namespace"] == _one("Namespace")["metadata"]["name"]


# --- built-in kinds against the Kubernetes JSON schemas ------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "document", [pytest.param(doc, id=name) for name, doc in _schema_checked()]
)
def test_builtin_kinds_validate_against_the_kubernetes_schema(
    version: str, document: dict[str, Any]
) -> None:
    kubernetes_validate.validate(document, version, strict=True)


def test_schema_validation_catches_mistakes() -> None:
    """The validator is not vacuous: a typo'd field and a wrong type are both refused."""
    typo = copy.deepcopy(_deployment())
    container = _pod_spec(typo)["containers"][0]
    container["readynessProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, latest_version(), strict=True)
    wrong = copy.deepcopy(_one("HorizontalPodAutoscaler"))
    wrong["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, latest_version(), strict=True)


def test_every_kind_is_schema_validated_or_structurally_checked() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in _base_documents()}
    kinds.add((_keda()["apiVersion"], _keda()["kind"]))
    structural = kinds & CRD_KINDS
    assert structural == {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("keda.sh/v1alpha1", "ScaledObject"),
    }
    # Everything else has a schema in kubernetes-validate (SchemaNotFoundError otherwise).
    checked = {(d["apiVersion"], d["kind"]) for _, d in _schema_checked()}
    assert kinds - CRD_KINDS <= checked


# --- the Deployment ------------------------------------------------------------------------


def test_one_uvicorn_worker_per_pod_serving_on_port_8000() -> None:
    container = _app_container()
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert not any("worker" in arg for arg in container["args"])
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert "replicas" not in _deployment()["spec"], "the autoscaler owns the replica count"


def test_probes_point_at_readyz_and_healthz_on_the_http_port() -> None:
    container = _app_container()
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/readyz", "port": "http"}
    # Generous: the first load may fetch or build a model (at least 5 minutes).
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_grace_period_outlasts_the_drain_which_outlasts_the_deadline() -> None:
    env = _env(_app_container())
    drain_s = float(env["PHONE_DET_DRAIN_TIMEOUT_S"])
    grace_s = _pod_spec(_deployment())["terminationGracePeriodSeconds"]
    assert grace_s > drain_s
    assert drain_s * 1000 >= float(env["PHONE_DET_DEADLINE_MS"])
    # The service drains on SIGTERM by itself; no preStop hook delays or duplicates that.
    assert "lifecycle" not in _app_container()


def test_environment_names_only_real_settings_and_defines_before_use() -> None:
    container = _app_container()
    settings = {f"PHONE_DET_{name.upper()}" for name in Settings.model_fields}
    names = [var["name"] for var in container["env"]]
    unknown = [n for n in names if n.startswith("PHONE_DET_") and n not in settings]
    assert unknown == []
    assert len(names) == len(set(names))
    for index, var in enumerate(container["env"]):
        for ref in _VAR_REF.findall(var.get("value", "")):
            assert ref in names[:index], f"{var['name']} uses $({ref}) before it is defined"
    # Every configured value is one the service accepts.
    values = {
        name.removeprefix("PHONE_DET_").lower(): value
        for name, value in _env(container).items()
        if name.startswith("PHONE_DET_")
    }
    Settings.model_validate(values)


def test_cpu_matches_the_inference_threads_and_memory_leaves_room_for_the_alert() -> None:
    container = _app_container()
    resources = container["resources"]
    threads = int(_env(container)["PHONE_DET_INTRA_OP_THREADS"])
    assert threads == 2
    assert _quantity(resources["requests"]["cpu"]) == threads
    assert _quantity(resources["limits"]["cpu"]) >= threads
    assert _quantity(resources["requests"]["memory"]) >= 512 * 2**20  # the S model < 500 MB
    (alert,) = [
        rule
        for group in _load(RULES_FILE)["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "PhoneDetectionHighMemory"
    ]
    threshold = float(alert["expr"].rsplit(">", 1)[1])
    assert _quantity(resources["limits"]["memory"]) > threshold, "OOM kill before the alert"


def test_model_cache_is_a_writable_empty_dir_shared_with_the_fetch_init_container() -> None:
    spec = _pod_spec(_deployment())
    container = _app_container()
    env = _env(container)
    cache_dir = env["PHONE_DET_MODEL_CACHE_DIR"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[cache_dir]]
    assert "emptyDir" in volumes[mounts["/tmp"]], "uploads over 1 MiB are spooled to /tmp"
    assert env["PHONE_DET_ALLOW_FETCH"] == "false"
    (init,) = spec["initContainers"]
    assert init["image"] == container["image"]
    init_env = _env(init)
    assert init["args"][:2] == ["model", "fetch"]
    assert init_env["PHONE_DET_MODEL_NAME"] == env["PHONE_DET_MODEL_NAME"]
    assert init_env["PHONE_DET_MODEL_CACHE_DIR"] == cache_dir
    assert {m["mountPath"]: m["name"] for m in init["volumeMounts"]}[cache_dir] == mounts[cache_dir]
    for ref in _VAR_REF.findall(" ".join(init["args"])):
        assert ref in init_env


@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", APP), ("DaemonSet", "phone-detector-otel-agent")]
)
def test_pods_meet_the_restricted_pod_security_profile(kind: str, name: str) -> None:
    spec = _pod_spec(_one(kind, name))
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host_namespace)
    assert all("hostPath" not in volume for volume in spec.get("volumes", []))
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"] + spec.get("initContainers", []):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert all("hostPort" not in port for port in container.get("ports", []))
        assert set(container["resources"]) == {"requests", "limits"}
    assert _one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )


def test_selectors_match_the_pod_labels() -> None:
    deployment = _deployment()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert _one("Service")["spec"]["selector"].items() <= pod_labels.items()
    pdb = _one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = _pod_spec(deployment)["topologySpreadConstraints"][0]["labelSelector"]
    assert spread["matchLabels"].items() <= pod_labels.items()
    # The otel agent's pods are not selected by the service's selectors, and vice versa.
    agent = _one("DaemonSet", "phone-detector-otel-agent")
    agent_labels = agent["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= agent_labels.items()
    assert not agent["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_service_targets_the_container_port_by_name() -> None:
    (port,) = _one("Service")["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in _app_container()["ports"]}
    assert port["targetPort"] in container_ports
    assert port["port"] == container_ports[port["targetPort"]] == 8000


def test_disruption_budget_leaves_replicas_serving() -> None:
    pdb = _one("PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] < _one("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    assert _deployment()["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- Prometheus Operator (structural: no CRD schema is installed) ---------------------------


def test_service_monitor_scrapes_metrics_of_the_service_by_port_name() -> None:
    monitor = _one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = _one("Service")
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    agent = _one("Service", "phone-detector-otel-agent")
    assert not spec["selector"]["matchLabels"].items() <= agent["metadata"]["labels"].items()
    assert "namespaceSelector" not in spec  # its own namespace
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert _seconds(endpoint["scrapeTimeout"]) < _seconds(endpoint["interval"])


def test_scrape_job_is_the_job_the_alert_rules_select() -> None:
    """ServiceMonitor targets get job=<Service name> (no jobLabel), as `up{job=...}` expects."""
    assert "jobLabel" not in _one("ServiceMonitor")["spec"]
    rules_text = RULES_FILE.read_text(encoding="utf-8")
    jobs = set(re.findall(r'job="([^"]+)"', rules_text))
    assert jobs == {_one("Service")["metadata"]["name"]}


def test_prometheus_rule_embeds_the_rules_file_unchanged() -> None:
    rule = _one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == _load(RULES_FILE)["groups"], (
        "deploy/k8s/prometheusrule.yaml is stale: run .venv/bin/python -m tests.deploy.render"
    )
    assert PROMETHEUS_RULE_FILE.read_text(encoding="utf-8") == render(), (
        "run .venv/bin/python -m tests.deploy.render"
    )


def test_prometheus_rule_is_well_formed() -> None:
    groups = _one("PrometheusRule")["spec"]["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule)
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in rule.get(key, {}).values())
            if "for" in rule:
                _seconds(rule["for"])


def test_monitor_and_rule_carry_the_same_prometheus_selector_label() -> None:
    monitor = _one("ServiceMonitor")["metadata"]["labels"]
    rule = _one("PrometheusRule")["metadata"]["labels"]
    assert monitor["release"] == rule["release"]


# --- autoscaling: HPA + prometheus-adapter, or KEDA -----------------------------------------


def _hpa_metric() -> tuple[str, float]:
    (metric,) = _one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue"
    return metric["pods"]["metric"]["name"], _quantity(target["averageValue"])


def test_hpa_scales_the_deployment_on_queue_depth_per_pod() -> None:
    hpa = _one("HorizontalPodAutoscaler")["spec"]
    deployment = _deployment()
    assert hpa["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    name, target = _hpa_metric()
    assert name == "phone_detection_queue_depth"
    env = _env(_app_container())
    # Below one batch, and far below the 80% queue-saturation alert.
    assert 0 < target <= int(env["PHONE_DET_MAX_BATCH_SIZE"])
    assert target < 0.8 * int(env["PHONE_DET_QUEUE_SIZE"])
    assert "cpu" not in str(hpa["metrics"]).lower()


def test_adapter_rule_serves_the_metric_the_hpa_asks_for() -> None:
    name, _ = _hpa_metric()
    served = {}
    for rule in _adapter_rules():
        series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        assert series.group(1) in _readme_metrics(), "not a metric the service exports"
        assert re.fullmatch(rule["name"]["matches"], series.group(1))
        overrides = rule["resources"]["overrides"]
        assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"]
        served[rule["name"]["as"]] = rule
    assert name in served


def test_adapter_helm_values_equal_the_configmap_rules() -> None:
    values = _load(K8S / "prometheus-adapter" / "values.yaml")
    assert values["rules"]["custom"] == _adapter_rules()


def test_keda_scaled_object_matches_the_hpa() -> None:
    scaled = _keda()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    hpa = _one("HorizontalPodAutoscaler")["spec"]
    assert spec["scaleTargetRef"]["name"] == _deployment()["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert spec["minReplicaCount"] == hpa["minReplicas"]
    assert spec["maxReplicaCount"] == hpa["maxReplicas"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata is string-valued"
    assert urlsplit(metadata["serverAddress"]).scheme in ("http", "https")
    metric, target = _hpa_metric()
    assert float(metadata["threshold"]) == target
    assert set(re.findall(r"\bphone_detection_[a-z_]+", metadata["query"])) == {metric}
    assert metric in _readme_metrics()
    namespace = _kustomization()["namespace"]
    assert f'namespace="{namespace}"' in metadata["query"]
    assert f'job="{_one("Service")["metadata"]["name"]}"' in metadata["query"]


def test_keda_component_removes_the_hpa() -> None:
    (patch,) = _kustomization(K8S / "components" / "keda")["patches"]
    deletion = yaml.safe_load(patch["patch"])
    hpa = _one("HorizontalPodAutoscaler")
    assert deletion["$patch"] == "delete"
    assert deletion["apiVersion"] == hpa["apiVersion"]
    assert deletion["kind"] == hpa["kind"]
    assert deletion["metadata"]["name"] == hpa["metadata"]["name"]


def test_autoscaler_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool has no bare PromQL parser: each query is checked as a recording rule."""
    (rule,) = _adapter_rules()
    adapter = (
        rule["metricsQuery"]
        .replace("<<.Series>>", "phone_detection_queue_depth")
        .replace("<<.LabelMatchers>>", 'namespace="phone-detector",pod=~"a|b"')
        .replace("<<.GroupBy>>", "pod")
    )
    queries = [adapter, _keda()["spec"]["triggers"][0]["metadata"]["query"]]
    document = {
        "groups": [
            {
                "name": "autoscaling-parse-check",
                "rules": [
                    {"record": f"check:autoscaling_{i}:parse", "expr": q}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "autoscaling.rules.yml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = subprocess.run(
        [_binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- OpenTelemetry collector agent ---------------------------------------------------------


def test_agent_config_is_otel_collector_yaml() -> None:
    (configmap,) = _generated_configmaps()
    copied = yaml.safe_load(configmap["data"]["collector.yaml"])
    assert copied == _load(ROOT / "otel" / "collector.yaml"), (
        "copy otel/collector.yaml to deploy/k8s/config/otel-collector.yaml"
    )


def test_agent_mounts_its_config_where_its_args_point() -> None:
    agent = _one("DaemonSet", "phone-detector-otel-agent")
    (configmap,) = _generated_configmaps()
    (container,) = _pod_spec(agent)["containers"]
    (volume,) = _pod_spec(agent)["volumes"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (item,) = volume["configMap"]["items"]
    assert item["key"] in configmap["data"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"]
    assert container["args"] == [f"--config={mount['mountPath']}/{item['path']}"]
    ports = {p["name"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports


def test_service_sends_spans_to_the_node_local_agent_and_is_scraped_not_pushed() -> None:
    env = _env(_app_container())
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    assert "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" not in env, "scraped and pushed: counted twice"
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
    agent_service = _one("Service", "phone-detector-otel-agent")
    assert agent_service["spec"]["internalTrafficPolicy"] == "Local"
    assert endpoint.hostname == agent_service["metadata"]["name"]
    assert endpoint.path == "/v1/traces"
    ports = {p["port"]: p["targetPort"] for p in agent_service["spec"]["ports"]}
    assert ports[endpoint.port] == "otlp-http"
    agent = _one("DaemonSet", "phone-detector-otel-agent")
    (container,) = _pod_spec(agent)["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(ports.values()) <= set(container_ports)
    collector = _load(ROOT / "otel" / "collector.yaml")
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http.endswith(f":{container_ports['otlp-http']}")
    assert agent_service["spec"]["selector"].items() <= (
        agent["spec"]["template"]["metadata"]["labels"].items()
    )


# --- model from a PVC (component) ----------------------------------------------------------


def test_model_pvc_component_serves_the_model_from_the_claim() -> None:
    patched = _model_pvc_deployment()
    assert _pod_spec(patched)["containers"][0]["name"] == APP  # the patch indexes containers/0
    spec = _pod_spec(patched)
    assert "initContainers" not in spec
    container = _app_container(patched)
    model_path = Path(_env(container)["PHONE_DET_MODEL_PATH"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    (claim,) = _load_all(K8S / "components" / "model-pvc" / "pvc.yaml")
    (name,) = [n for n, v in volumes.items() if "persistentVolumeClaim" in v]
    assert volumes[name]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mounts[name]["readOnly"] is True
    assert model_path.parent == Path(mounts[name]["mountPath"])
    assert model_path.stem == _env(container)["PHONE_DET_MODEL_NAME"]


# --- the deployment README -----------------------------------------------------------------


def test_deploy_readme_explains_apply_scaling_and_every_file() -> None:
    text = (K8S / "README.md").read_text(encoding="utf-8")
    assert "kubectl apply -k deploy/k8s" in text
    assert "phone_detection_queue_depth" in text
    assert "one uvicorn worker" in text.lower()
    files = [p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml")]
    missing = [f for f in files if f"`{f}`" not in text]
    assert missing == []


# --- kustomize itself, where kubectl is installed ------------------------------------------


def _kustomize_build(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the structural kustomization checks still ran")
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_kustomize_builds_the_base() -> None:
    built = _kustomize_build(K8S)
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in built)
    (configmap,) = [d for d in built if d["kind"] == "ConfigMap"]
    assert configmap["metadata"]["name"].startswith("phone-detector-otel-agent-")  # hashed
    expected = [f"{d['kind']}/{d['metadata']['name']}" for d in _base_documents()]
    expected = [
        f"ConfigMap/{configmap['metadata']['name']}" if k.startswith("ConfigMap/") else k
        for k in expected
    ]
    assert kinds == sorted(expected)
    (agent,) = [d for d in built if d["kind"] == "DaemonSet"]
    assert _pod_spec(agent)["volumes"][0]["configMap"]["name"] == configmap["metadata"]["name"]
    for doc in built:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == _kustomization()["namespace"]
        if (doc["apiVersion"], doc["kind"]) not in CRD_KINDS:
            kubernetes_validate.validate(doc, latest_version(), strict=True)


def test_kustomize_builds_an_overlay_with_both_components(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(K8S, overlay)  # kustomize refuses absolute paths
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "phone-detector",
                "resources": [base],
                "components": [f"{base}/components/keda", f"{base}/components/model-pvc"],
            }
        ),
        encoding="utf-8",
    )
    built = _kustomize_build(overlay)
    kinds = {d["kind"] for d in built}
    assert "HorizontalPodAutoscaler" not in kinds
    assert {"ScaledObject", "PersistentVolumeClaim"} <= kinds
    (deployment,) = [d for d in built if d["kind"] == "Deployment"]
    assert "initContainers" not in _pod_spec(deployment)
    assert _env(_app_container(deployment))["PHONE_DET_MODEL_PATH"].startswith("/models/")
    for doc in built:
        if (doc["apiVersion"], doc["kind"]) not in CRD_KINDS:
            kubernetes_validate.validate(doc, latest_version(), strict=True)
