"""Tracer provider set-up and the spans of the detection path.

A request's server span (from the FastAPI instrumentation) gets children for decode and
preprocess, queue wait, inference and postprocess; each batch has its own span, linked to
the requests it served, since one batch serves many traces.
"""

import time
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext, Tracer

from app.telemetry.resource import otlp_traces_configured

TRACER_NAME = "phone_detector"


def build_tracer_provider(resource: Resource) -> TracerProvider:
    """A provider that exports over OTLP/HTTP when the OTLP environment is set."""
    provider = TracerProvider(resource=resource)
    if otlp_traces_configured():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def current_span_context() -> SpanContext:
    """The active span's context (invalid when there is none)."""
    return trace.get_current_span().get_span_context()


def record_finished_span(
    tracer: Tracer,
    name: str,
    *,
    start_ns: int,
    duration_s: float,
    links: Sequence[SpanContext] = (),
) -> None:
    """Record a child span of the current span for a stage already timed elsewhere."""
    span = tracer.start_span(
        name,
        start_time=start_ns,
        links=[Link(ctx) for ctx in links if ctx.is_valid],
    )
    span.end(end_time=start_ns + int(duration_s * 1e9))


def now_ns() -> int:
    return time.time_ns()


def trace_ids() -> tuple[str | None, str | None]:
    """(trace_id, span_id) of the active span as hex, or (None, None)."""
    ctx = current_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
