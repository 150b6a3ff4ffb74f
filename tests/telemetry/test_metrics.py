"""After a known sequence of requests, the scraped /metrics says exactly what happened."""

import asyncio
import re

import pytest

from app.inference.model import OnnxModel
from tests.utils.images import encode, red_box_image
from tests.utils.prom_text import metric_value
from tests.utils.service import SlowModel, running_app

pytestmark = pytest.mark.anyio

# The phone is at the top-left of the frame: its centre falls in region top_left.
JPEG = encode(red_box_image((1200, 900), (100, 100, 300, 250)), "JPEG", quality=95)


def _value(text: str, name: str, **labels: str) -> float:
    return metric_value(text, name, **labels)


async def test_known_sequence_is_counted_exactly(red_model: OnnxModel) -> None:
    slow = SlowModel(red_model, delay_s=0.3)
    # queue 2: the two-image request always fits, the flood of 6 never does
    async with running_app(slow, queue_size=2, max_batch_size=1) as (_, client):
        ok_two = await client.post(
            "/v1/detect", files=[("file", ("a.jpg", JPEG)), ("file", ("b.jpg", JPEG))],
            params={"source": "hall-a-cam-1"},
        )  # fmt: skip
        ok_one = await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)})
        bad = await client.post("/v1/detect", files={"file": ("x.jpg", JPEG[:300])})
        flood = await asyncio.gather(
            *(client.post("/v1/detect", files={"file": ("a.jpg", JPEG)}) for _ in range(6))
        )
        text = (await client.get("/metrics")).text

    assert (ok_two.status_code, ok_one.status_code, bad.status_code) == (200, 200, 400)
    shed = sum(r.status_code == 503 for r in flood)
    served = sum(r.status_code == 200 for r in flood)
    assert shed >= 1
    assert shed + served == 6

    success = _value(text, "phone_detection_requests_total", method="multipart", status="success")
    assert success == 2 + served
    assert _value(text, "phone_detection_requests_total", method="multipart", status="error") == 1
    assert (
        _value(text, "phone_detection_requests_total", method="multipart", status="rejected")
        == shed
    )
    assert _value(text, "phone_detection_requests_total", method="base64", status="success") == 0
    assert _value(text, "phone_detection_errors_total", reason="bad_image") == 1
    assert _value(text, "phone_detection_errors_total", reason="queue_full") == shed
    assert _value(text, "phone_detection_frames_rejected_total", reason="queue_full") == shed
    # latency is observed for processed requests (successes and the bad image), not shed ones
    assert _value(text, "phone_detection_latency_seconds_count", method="multipart") == (
        success + 1
    )
    assert _value(text, "phone_detection_latency_seconds_bucket", method="multipart", le="10.0")
    images = 2 + 1 + served
    assert _value(text, "phone_detection_devices_per_image_count") == images
    assert _value(text, "phone_detection_devices_per_image_sum") == images
    assert _value(text, "phone_detection_devices_current") == 1
    assert _value(text, "phone_detection_devices_by_region_total", region="top_left") == images
    assert _value(text, "phone_detection_devices_by_source_total", source="hall-a-cam-1") == 2
    # every admitted request, shed ones included: 2 + 1 + bad + 6 flood
    assert _value(text, "phone_detection_images_per_request_count") == 3 + 6
    assert _value(text, "phone_detection_images_per_request_sum") == 2 + 1 + 1 + 6
    assert _value(text, "phone_detection_batch_size_count") >= images
    assert _value(text, "phone_detection_inference_duration_seconds_count") >= images
    assert _value(text, "phone_detection_queue_wait_duration_seconds_count") == images
    assert _value(text, "phone_detection_queue_capacity") == 2
    assert _value(text, "phone_detection_queue_depth") == 0
    assert _value(text, "phone_detection_model_load") == 1
    assert _value(
        text, "phone_detection_model_info", model="red_box", variant="custom", synthetic="false",
        provider="CPUExecutionProvider",
    ) == 1  # fmt: skip
    assert _value(text, "process_resident_memory_bytes") > 0
    assert _value(text, "process_cpu_seconds_total") > 0
    assert "http_server_" in text  # opentelemetry-instrumentation-fastapi


async def test_source_labels_stay_bounded(red_model: OnnxModel) -> None:
    async with running_app(red_model, max_sources=2) as (_, client):
        for camera in ("cam-1", "cam-2", "cam-3", "cam-4"):
            await client.post(
                "/v1/detect", files={"file": ("a.jpg", JPEG)}, params={"source": camera}
            )
        text = (await client.get("/metrics")).text

    sources = set(re.findall(r'phone_detection_devices_by_source_total\{source="([^"]+)"', text))
    assert sources == {"cam-1", "cam-2", "other"}
    assert _value(text, "phone_detection_devices_by_source_total", source="other") == 2


async def test_allowlist_decides_which_sources_get_series(red_model: OnnxModel) -> None:
    async with running_app(red_model, sources_allowlist=["exam-hall-1"]) as (_, client):
        for camera in ("exam-hall-1", "random-id-123"):
            await client.post(
                "/v1/detect", files={"file": ("a.jpg", JPEG)}, params={"source": camera}
            )
        text = (await client.get("/metrics")).text

    sources = set(re.findall(r'phone_detection_devices_by_source_total\{source="([^"]+)"', text))
    assert sources == {"exam-hall-1", "other"}
