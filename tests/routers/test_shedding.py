"""A full queue is answered before the request body is read: a flood of uploads must not
starve the model of CPU just to be refused."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from app.inference.model import OnnxModel
from tests.utils.images import encode, red_box_image
from tests.utils.prom_text import metric_value
from tests.utils.service import SlowModel, running_app

pytestmark = pytest.mark.anyio

JPEG = encode(red_box_image((640, 480), (100, 100, 300, 400)), "JPEG", quality=90)
BOUNDARY = "shed-boundary"


class WatchedBody:
    """A multipart upload streamed in chunks; says whether anyone read it."""

    def __init__(self) -> None:
        self.read = False

    async def stream(self) -> AsyncIterator[bytes]:
        self.read = True
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        yield JPEG
        yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def _post_watched(client: httpx.AsyncClient, path: str, **headers: str) -> tuple:
    body = WatchedBody()
    response = await client.post(
        path,
        content=body.stream(),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}", **headers},
    )
    return response, body


async def _fill_queue(client: httpx.AsyncClient, **headers: str) -> list[asyncio.Task]:
    """One request in the (slow) model and one in the queue of size 1."""
    tasks = []
    for _ in range(2):
        tasks.append(
            asyncio.create_task(
                client.post("/v1/detect", files={"file": ("a.jpg", JPEG)}, headers=headers)
            )
        )
        await asyncio.sleep(0.15)
    return tasks


async def test_full_queue_is_refused_without_reading_the_body(red_model: OnnxModel) -> None:
    slow = SlowModel(red_model, delay_s=0.6)
    async with running_app(slow, queue_size=1, max_batch_size=1) as (_, client):
        accepted = await _fill_queue(client)
        shed, body = await _post_watched(client, "/v1/detect")
        answered = await asyncio.gather(*accepted)
        after, body_after = await _post_watched(client, "/v1/detect")
        metrics = (await client.get("/metrics")).text

    assert shed.status_code == 503
    assert shed.headers["Retry-After"] == "1"
    assert shed.json()["error"]["code"] == "queue_full"
    assert not body.read, "the body of a shed request was read"
    assert [r.status_code for r in answered] == [200, 200]
    # With room again the same request is read and served.
    assert after.status_code == 200
    assert body_after.read
    # Counted exactly as a refusal by the route: request, error and frame.
    requests = "phone_detection_requests_total"
    assert metric_value(metrics, requests, method="multipart", status="rejected") == 1
    assert metric_value(metrics, "phone_detection_errors_total", reason="queue_full") == 1
    assert metric_value(metrics, "phone_detection_frames_rejected_total", reason="queue_full") == 1


async def test_without_a_valid_key_a_full_queue_still_answers_401(red_model: OnnxModel) -> None:
    slow = SlowModel(red_model, delay_s=0.6)
    async with running_app(slow, queue_size=1, max_batch_size=1, api_keys=["sesame"]) as (
        _,
        client,
    ):
        accepted = await _fill_queue(client, **{"X-API-Key": "sesame"})
        stranger, _ = await _post_watched(client, "/v1/detect")
        keyed, keyed_body = await _post_watched(client, "/v1/detect", **{"X-API-Key": "sesame"})
        await asyncio.gather(*accepted)

    assert stranger.status_code == 401
    assert keyed.status_code == 503
    assert not keyed_body.read
