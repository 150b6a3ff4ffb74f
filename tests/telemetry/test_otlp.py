"""OTLP push from a real server process to a receiver that decodes the protobuf, and the
per-instance identity that keeps several processes' series apart."""

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.utils.graphs import red_box_model, save
from tests.utils.images import encode, red_box_image
from tests.utils.otlp_receiver import Received, otlp_receiver
from tests.utils.server_process import start_server, stop_server

JPEG = encode(red_box_image((1280, 720), (100, 100, 300, 400)), "JPEG", quality=95)


def _attributes(resource: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in resource.attributes}


def _request_counts(received: Received) -> dict[str, float]:
    """phone_detection.requests{status=success} by service.instance.id, latest value."""
    counts: dict[str, float] = {}
    with received.lock:
        for export in received.metrics:
            for rm in export.resource_metrics:
                instance = _attributes(rm.resource)["service.instance.id"]
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name != "phone_detection.requests":
                            continue
                        for point in metric.sum.data_points:
                            labels = {kv.key: kv.value.string_value for kv in point.attributes}
                            if labels == {"method": "multipart", "status": "success"}:
                                counts[instance] = point.as_int or point.as_double
    return counts


def _wait_for(condition: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_metrics_and_spans_are_pushed_with_instance_identity(tmp_path: Path) -> None:
    model = save(red_box_model(), tmp_path / "red.onnx")
    with otlp_receiver() as (endpoint, received):
        otel_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "phone-detector-test",
        }
        first_dir, second_dir = tmp_path / "a", tmp_path / "b"
        first_dir.mkdir()
        second_dir.mkdir()
        first, first_url = start_server(model, first_dir, **otel_env)
        second, second_url = start_server(model, second_dir, **otel_env)
        try:
            for _ in range(2):
                r = httpx.post(f"{first_url}/v1/detect", files={"file": ("a.jpg", JPEG)})
                assert r.status_code == 200
            r = httpx.post(f"{second_url}/v1/detect", files={"file": ("a.jpg", JPEG)})
            assert r.status_code == 200

            _wait_for(lambda: sorted(_request_counts(received).values()) == [1, 2])
            _wait_for(lambda: bool(received.traces))
            time.sleep(0.5)  # let the batch span processor flush the last spans
        finally:
            stop_server(first)
            stop_server(second)

    resources = [
        _attributes(rm.resource) for export in received.metrics for rm in export.resource_metrics
    ]
    assert {r["service.name"] for r in resources} == {"phone-detector-test"}
    assert {r["service.version"] for r in resources} == {"0.1.0"}
    assert len({r["service.instance.id"] for r in resources}) == 2

    spans = [
        span
        for export in received.traces
        for rs in export.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    names = {span.name for span in spans}
    assert {"decode_preprocess", "queue_wait", "inference", "postprocess", "inference_batch"} <= (
        names
    )
    batch_spans = [s for s in spans if s.name == "inference_batch"]
    request_traces = {s.trace_id for s in spans if s.name == "queue_wait"}
    linked = {link.trace_id for s in batch_spans for link in s.links}
    assert request_traces <= linked  # every request's trace is linked from its batch

    log_lines = [
        json.loads(line)
        for line in (first_dir / "server.log").read_text().splitlines()
        if line.startswith("{") and '"detect request"' in line
    ]
    assert len(log_lines) == 2
    assert all(line["status"] == "success" and line["phones"] == 1 for line in log_lines)
    assert {line["trace_id"] for line in log_lines} <= {t.hex() for t in request_traces}
