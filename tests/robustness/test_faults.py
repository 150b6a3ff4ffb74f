"""Fault injection in-process: a model that raises, a model that hangs past the deadline, a
client that leaves while its frame waits in the queue, and shedding a full queue. Every
case is answered with the right JSON error, counted in /metrics, and leaves the service
ready and serving."""

import asyncio
import time
import uuid

import pytest
from fastapi import FastAPI

from app.inference.model import OnnxModel
from app.runtime import Runtime
from tests.robustness.gated import GatedModel, LeavingClient, metric, until
from tests.utils.images import encode, red_box_image
from tests.utils.service import running_app

# 320x240 images letterbox at scale 2 into the 640x640 model input, so the model sees the
# red box's x1 doubled: each image is recognisable among the frames the model ran.
A_JPEG = encode(red_box_image((320, 240), (20, 40, 120, 200)), "JPEG", quality=95)  # x1 40
B_JPEG = encode(red_box_image((320, 240), (100, 40, 200, 200)), "JPEG", quality=95)  # x1 200
A_X1, B_X1 = 40.0, 200.0


def _runtime(service: FastAPI) -> Runtime:
    runtime = service.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def _queue_depth(service: FastAPI) -> int:
    pipeline = _runtime(service).pipeline
    assert pipeline is not None
    return pipeline.batcher.queue_depth


def _seen_x1(model: GatedModel, x1: float) -> int:
    return sum(abs(x - x1) <= 3 for x in model.ran_x1)


def _post(client, jpeg: bytes = A_JPEG):  # type: ignore[no-untyped-def]
    return client.post("/v1/detect", files={"file": ("a.jpg", jpeg)}, timeout=30)


@pytest.mark.anyio
async def test_model_raising_fails_only_its_batch(red_model: OnnxModel) -> None:
    model = GatedModel(red_model)
    async with running_app(model, max_batch_size=8) as (service, client):
        model.hold()
        first = asyncio.create_task(_post(client))
        await until(lambda: model.entered >= 1)  # the first batch (of 1) is in the model
        queued = [asyncio.create_task(_post(client)) for _ in range(3)]
        await until(lambda: _queue_depth(service) == 3)  # they form the next batch
        model.fail_next = 1
        model.release()
        failed = await first
        served = await asyncio.gather(*queued)
        ready = await client.get("/readyz")
        after = await _post(client)
        text = (await client.get("/metrics")).text

    assert failed.status_code == 500
    assert set(failed.json()) == {"error"}
    assert set(failed.json()["error"]) == {"code", "message"}
    assert failed.json()["error"]["code"] == "model_error"
    assert "Traceback" not in failed.text
    assert "RuntimeError" not in failed.text
    assert [r.status_code for r in served] == [200, 200, 200]
    assert ready.status_code == 200
    assert after.status_code == 200
    assert metric(text, "phone_detection_errors_total", reason="model_error") == 1
    assert metric(text, "phone_detection_requests_total", method="multipart", status="error") == 1
    assert metric(text, "phone_detection_requests_total", method="multipart", status="success") == 4
    assert metric(text, "phone_detection_queue_depth") == 0


@pytest.mark.anyio
async def test_hung_model_times_out_callers_and_recovers(red_model: OnnxModel) -> None:
    model = GatedModel(red_model)
    async with running_app(model, max_batch_size=1, deadline_ms=500) as (service, client):
        model.hold()
        started = time.monotonic()
        running = asyncio.create_task(_post(client, A_JPEG))
        await until(lambda: model.entered >= 1)
        queued = [asyncio.create_task(_post(client, B_JPEG)) for _ in range(2)]
        await until(lambda: _queue_depth(service) == 2)
        # the loop answers while the model thread is stuck
        probe_started = time.monotonic()
        health = await client.get("/healthz")
        probe_s = time.monotonic() - probe_started
        timed_out = await asyncio.gather(running, *queued)
        elapsed_s = time.monotonic() - started
        ready_while_hung = await client.get("/readyz")

        model.release()  # the hung batch returns; nobody wants its answer any more
        recovered = await _post(client, A_JPEG)
        await until(lambda: _queue_depth(service) == 0)
        text = (await client.get("/metrics")).text

    assert health.status_code == 200
    assert probe_s < 1.0
    assert [r.status_code for r in timed_out] == [504, 504, 504]
    assert all(r.json()["error"]["code"] == "timeout" for r in timed_out)
    assert elapsed_s < 5.0, "callers waited for the hung model instead of their deadline"
    assert ready_while_hung.status_code == 200
    assert recovered.status_code == 200, recovered.text
    # the queued frames were dropped before inference: the model ran the hung one and the
    # one after recovery, never the two that expired in the queue
    assert _seen_x1(model, B_X1) == 0, model.ran_x1
    assert _seen_x1(model, A_X1) == 2, model.ran_x1
    assert metric(text, "phone_detection_requests_total", method="multipart", status="timeout") == 3
    assert metric(text, "phone_detection_errors_total", reason="timeout") == 3
    dropped = metric(text, "phone_detection_frames_rejected_total", reason="deadline") + metric(
        text, "phone_detection_frames_rejected_total", reason="cancelled"
    )
    assert dropped == 2
    assert metric(text, "phone_detection_queue_depth") == 0


def _multipart(jpeg: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


@pytest.mark.anyio
async def test_client_leaving_while_queued_drops_its_frame(red_model: OnnxModel) -> None:
    model = GatedModel(red_model)
    async with running_app(model, max_batch_size=1) as (service, client):
        model.hold()
        blocker = asyncio.create_task(_post(client, A_JPEG))
        await until(lambda: model.entered >= 1)
        leaving = LeavingClient(service, "/v1/detect", *_multipart(B_JPEG))
        call = asyncio.create_task(leaving.run())
        await until(lambda: _queue_depth(service) == 1)  # its frame waits behind the blocker
        leaving.leave()
        await asyncio.wait_for(call, 5)  # the handler gives up at once, model still held
        during = (await client.get("/metrics")).text
        model.release()
        served = await blocker
        after = await _post(client, A_JPEG)
        await until(lambda: _queue_depth(service) == 0)
        ready = await client.get("/readyz")
        text = (await client.get("/metrics")).text

    assert served.status_code == 200
    assert after.status_code == 200
    assert ready.status_code == 200
    assert leaving.status == 499
    assert (
        metric(during, "phone_detection_frames_rejected_total", reason="client_disconnected") == 1
    )
    assert (
        metric(text, "phone_detection_requests_total", method="multipart", status="cancelled") == 1
    )
    assert _seen_x1(model, B_X1) == 0, f"the model ran the abandoned frame: {model.ran_x1}"
    assert _seen_x1(model, A_X1) == 2


@pytest.mark.anyio
async def test_dropped_frames_are_counted_once_under_their_reason(red_model: OnnxModel) -> None:
    """phone_detection_frames_rejected_total: one count per dropped frame, with its reason."""
    model = GatedModel(red_model)
    async with running_app(model, max_batch_size=1, deadline_ms=400) as (service, client):
        model.hold()
        blocker = asyncio.create_task(_post(client, A_JPEG))
        await until(lambda: model.entered >= 1)
        leaving = LeavingClient(service, "/v1/detect", *_multipart(B_JPEG))
        call = asyncio.create_task(leaving.run())
        await until(lambda: _queue_depth(service) == 1)
        leaving.leave()
        await call
        expired = await _post(client, B_JPEG)  # waits in the queue until its deadline
        model.release()
        await blocker
        await until(lambda: _queue_depth(service) == 0)
        text = (await client.get("/metrics")).text

    assert expired.status_code == 504
    rejected = {
        reason: metric(text, "phone_detection_frames_rejected_total", reason=reason)
        for reason in (
            "queue_full",
            "shutting_down",
            "deadline",
            "cancelled",
            "client_disconnected",
        )
    }
    # two frames were dropped before inference: one whose client left, one that expired
    assert rejected == {
        "queue_full": 0,
        "shutting_down": 0,
        "deadline": 1,
        "cancelled": 0,
        "client_disconnected": 1,
    }


@pytest.mark.anyio
async def test_full_queue_sheds_before_decoding(red_model: OnnxModel) -> None:
    """README: "A full queue answers 503 with Retry-After at once" - so a shed request must
    not first take a decode-pool slot and CPU to decode and letterbox its image."""
    model = GatedModel(red_model)
    async with running_app(model, max_batch_size=1, queue_size=2) as (service, client):
        pipeline = _runtime(service).pipeline
        assert pipeline is not None
        prepared = 0
        prepare = pipeline.detector.prepare

        def counting_prepare(data: bytes):  # type: ignore[no-untyped-def]
            nonlocal prepared
            prepared += 1
            return prepare(data)

        pipeline.detector.prepare = counting_prepare  # type: ignore[method-assign]
        model.hold()
        running = asyncio.create_task(_post(client))
        await until(lambda: model.entered >= 1)
        queued = [asyncio.create_task(_post(client)) for _ in range(2)]
        await until(lambda: _queue_depth(service) == 2)
        shed = await asyncio.gather(*(_post(client) for _ in range(6)))
        model.release()
        await asyncio.gather(running, *queued)

    assert [r.status_code for r in shed] == [503] * 6
    assert all(r.headers["Retry-After"] == "1" for r in shed)
    assert all(r.json()["error"]["code"] == "queue_full" for r in shed)
    assert prepared == 3, f"{prepared - 3} shed requests were decoded before being refused"
