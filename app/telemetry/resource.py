"""The OpenTelemetry resource: who is reporting (service name, version, instance)."""

import os
import socket
import uuid

from opentelemetry.sdk.resources import Resource

import app

DEFAULT_SERVICE_NAME = "phone-detector"


def service_resource() -> Resource:
    """service.name (OTEL_SERVICE_NAME wins), service.version and a per-process instance id.

    The instance id keeps pushed series of replicas or workers apart (hostname-pid-random).
    OTEL_RESOURCE_ATTRIBUTES is honoured too.
    """
    attributes: dict[str, str] = {
        "service.version": app.__version__,
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
    }
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    return Resource.create(attributes)


def otlp_metrics_configured() -> bool:
    """True when the standard OTLP environment asks for metrics to be pushed."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def otlp_traces_configured() -> bool:
    """True when the standard OTLP environment asks for spans to be pushed."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
