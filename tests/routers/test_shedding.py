"""A full queue is answered before the request body is read: a flood of uploads must not
starve the model of CPU just to be refused."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.inference.model import OnnxModel
from tests.robustness.gated import GatedModel, until
from tests.utils.images import encode, red_box_image
from tests.utils.prom_text import metric_value
from tests.utils.service import running_app

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


async def _fill_queue(
    service: Any, model: GatedModel, client: httpx.AsyncClient, **headers: str
) -> list[asyncio.Task]:
    """One request held in the model and one in the queue of size 1: "the queue is full"
    is a state the test waits for, not a race against a timer on a loaded machine."""
    batcher = service.state.runtime.pipeline.batcher
    model.hold()

    def post() -> asyncio.Task:
        upload = client.post("/v1/detect", files={"file": ("a.jpg", JPEG)}, headers=headers)
        return asyncio.create_task(upload)

    in_model = post()
    await until(lambda: model.entered == 1)
    queued = post()
    await until(lambda: batcher.queue_depth == 1)
    return [in_model, queued]


async def test_full_queue_is_refused_without_reading_the_body(red_model: OnnxModel) -> None:
    gated = GatedModel(red_model)
    async with running_app(gated, queue_size=1, max_batch_size=1) as (service, client):
        accepted = await _fill_queue(service, gated, client)
        shed, body = await _post_watched(client, "/v1/detect")
        gated.release()
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
    gated = GatedModel(red_model)
    async with running_app(gated, queue_size=1, max_batch_size=1, api_keys=["sesame"]) as (
        service,
        client,
    ):
        accepted = await _fill_queue(service, gated, client, **{"X-API-Key": "sesame"})
        stranger, _ = await _post_watched(client, "/v1/detect")
        keyed, keyed_body = await _post_watched(client, "/v1/detect", **{"X-API-Key": "sesame"})
        gated.release()
        await asyncio.gather(*accepted)

    assert stranger.status_code == 401
    assert keyed.status_code == 503
    assert not keyed_body.read


async def test_frames_that_would_miss_the_deadline_are_refused_early(red_model: OnnxModel) -> None:
    """The warm-up measures 0.37 s a frame; with a 2 s deadline admission allows 1.6 s of work
    ahead: the one running and three waiting. The fifth is refused though the queue has room,
    and everything admitted is answered in time."""
    gated = GatedModel(red_model, delay_s=0.37)
    settings = {"queue_size": 16, "max_batch_size": 1, "deadline_ms": 2000}
    async with running_app(gated, **settings) as (service, client):
        batcher = service.state.runtime.pipeline.batcher
        accepted = await _fill_queue(service, gated, client)
        for depth in (2, 3):
            accepted.append(asyncio.create_task(client.post("/v1/detect", files={"file": JPEG})))
            await until(lambda depth=depth: batcher.queue_depth == depth)
        shed, body = await _post_watched(client, "/v1/detect")
        gated.release()
        answered = await asyncio.gather(*accepted)

    assert shed.status_code == 503
    assert "deadline" in shed.json()["error"]["message"]
    assert not body.read
    assert [r.status_code for r in answered] == [200] * 4
