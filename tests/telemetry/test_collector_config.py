"""otel/collector.yaml is consistent: what pipelines use is defined, memory_limiter first."""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG: dict[str, Any] = yaml.safe_load((ROOT / "otel" / "collector.yaml").read_text())


def test_every_pipeline_component_is_defined() -> None:
    for name, pipeline in CONFIG["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in CONFIG[kind], f"{name}: {kind} {component} undefined"


def test_memory_limiter_runs_first_and_batch_runs() -> None:
    for pipeline in CONFIG["service"]["pipelines"].values():
        assert pipeline["processors"][0] == "memory_limiter"
        assert "batch" in pipeline["processors"]


def test_receives_otlp_http_where_the_service_pushes() -> None:
    http = CONFIG["receivers"]["otlp"]["protocols"]["http"]
    assert http["endpoint"].endswith(":4318")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service_env = next(
        svc.get("environment", {})
        for svc in compose["services"].values()
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in svc.get("environment", {})
    )
    assert service_env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")


def test_prometheus_exporter_keeps_instance_identity() -> None:
    exporter = CONFIG["exporters"]["prometheus"]
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is True
