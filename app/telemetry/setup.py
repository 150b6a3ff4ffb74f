"""Build the service's telemetry from settings and the standard OTEL_* environment."""

from dataclasses import dataclass

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

import app
from app.config import Settings
from app.telemetry.metrics import DetectionMetrics
from app.telemetry.resource import otlp_metrics_configured, service_resource
from app.telemetry.tracing import TRACER_NAME, build_tracer_provider


@dataclass
class Telemetry:
    """Metrics (Prometheus registry, optional OTLP push) and tracing of one app."""

    metrics: DetectionMetrics
    tracer_provider: TracerProvider
    tracer: Tracer

    def shutdown(self) -> None:
        """Flush pushed metrics and spans; call once, at the end of the app's life."""
        self.metrics.shutdown()
        self.tracer_provider.shutdown()


def build_telemetry(settings: Settings) -> Telemetry:
    """Prometheus always; OTLP/HTTP push of metrics and spans when OTEL_EXPORTER_OTLP_* is set.

    The push interval is the standard OTEL_METRIC_EXPORT_INTERVAL (milliseconds).
    """
    resource = service_resource()
    readers: list[MetricReader] = []
    if otlp_metrics_configured():
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    metrics = DetectionMetrics(
        resource=resource,
        extra_readers=readers,
        max_sources=settings.max_sources,
        sources_allowlist=settings.sources_allowlist,
    )
    tracer_provider = build_tracer_provider(resource)
    tracer = tracer_provider.get_tracer(TRACER_NAME, app.__version__)
    return Telemetry(metrics=metrics, tracer_provider=tracer_provider, tracer=tracer)
