"""The detection endpoints over ASGI, with the red-box model behind the real batcher."""

import asyncio
import base64

import pytest

from app.inference.model import OnnxModel
from tests.utils.images import encode, red_box_image
from tests.utils.service import SlowModel, running_app

pytestmark = pytest.mark.anyio

JPEG = encode(red_box_image((1280, 720), (100, 100, 300, 400)), "JPEG", quality=95)
PNG_PORTRAIT = encode(red_box_image((480, 640), (50, 60, 150, 300)), "PNG")


def _box(result: dict) -> tuple[float, ...]:  # type: ignore[type-arg]
    box = result["detections"][0]["box"]
    return box["x1"], box["y1"], box["x2"], box["y2"]


async def test_multipart_returns_boxes_in_upload_order(red_model: OnnxModel) -> None:
    async with running_app(red_model) as (_, client):
        response = await client.post(
            "/v1/detect",
            files=[("file", ("a.jpg", JPEG, "image/jpeg")), ("file", ("b.png", PNG_PORTRAIT))],
        )

    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "red_box", "variant": "custom", "synthetic": False}
    first, second = body["results"]
    assert (first["width"], first["height"], first["count"]) == (1280, 720, 1)
    assert _box(first) == pytest.approx((100, 100, 300, 400), abs=2)
    assert (second["width"], second["height"]) == (480, 640)
    assert _box(second) == pytest.approx((50, 60, 150, 300), abs=2)
    assert set(first["timings_ms"]) == {
        "queue", "decode", "preprocess", "inference", "postprocess", "total",
    }  # fmt: skip
    assert first["detections"][0] == {
        "label": "phone",
        "class_id": 67,
        "score": 0.9,
        "box": first["detections"][0]["box"],
    }


async def test_options_as_query_or_form(red_model: OnnxModel) -> None:
    async with running_app(red_model) as (_, client):
        by_query = await client.post(
            "/v1/detect", files={"file": ("a.jpg", JPEG)}, params={"score_threshold": 0.95}
        )
        by_form = await client.post(
            "/v1/detect", files={"file": ("a.jpg", JPEG)}, data={"score_threshold": "0.95"}
        )
        default = await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)})

    assert by_query.json()["results"][0]["count"] == 0
    assert by_form.json()["results"][0]["count"] == 0
    assert default.json()["results"][0]["count"] == 1


async def test_base64_echoes_ids(red_model: OnnxModel) -> None:
    payload = {
        "images": [
            {"id": "cam-1/42", "data": base64.b64encode(JPEG).decode()},
            {"id": "cam-2/7", "data": base64.b64encode(PNG_PORTRAIT).decode()},
        ],
        "max_detections": 5,
        "source": "cam-1",
    }
    async with running_app(red_model) as (_, client):
        response = await client.post("/v1/detect/base64", json=payload)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["cam-1/42", "cam-2/7"]
    assert _box(results[0]) == pytest.approx((100, 100, 300, 400), abs=2)


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"files": {"file": ("x.jpg", b"plain text, not an image")}}, 415, "unsupported_format"),
        ({"files": {"file": ("x.jpg", JPEG[: len(JPEG) // 2])}}, 400, "bad_image"),
        ({}, 422, "invalid_request"),
        (
            {"files": {"file": ("a.jpg", JPEG)}, "params": {"score_threshold": 2}},
            422,
            "invalid_request",
        ),
        ({"files": [("file", ("a.jpg", JPEG))] * 5}, 413, "too_many_files"),
    ],
)
async def test_bad_requests_get_json_errors(
    red_model: OnnxModel,
    request_kwargs: dict,
    status: int,
    code: str,  # type: ignore[type-arg]
) -> None:
    async with running_app(red_model, max_files_per_request=4) as (_, client):
        response = await client.post("/v1/detect", **request_kwargs)
        ready = await client.get("/readyz")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert ready.status_code == 200


async def test_invalid_base64_is_400(red_model: OnnxModel) -> None:
    async with running_app(red_model) as (_, client):
        response = await client.post("/v1/detect/base64", json={"images": [{"data": "%%%"}]})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_base64"


async def test_concurrent_requests_are_batched_and_equal_unbatched(red_model: OnnxModel) -> None:
    slow = SlowModel(red_model, delay_s=0.15)
    images = [
        encode(red_box_image((800, 600), (10 * i, 20, 10 * i + 100, 220)), "PNG") for i in range(6)
    ]
    async with running_app(slow) as (_, client):
        slow.batch_sizes.clear()  # forget the warm-up runs
        alone = [
            (await client.post("/v1/detect", files={"file": ("i.png", data)})).json()
            for data in images
        ]
        together = await asyncio.gather(
            *(client.post("/v1/detect", files={"file": ("i.png", data)}) for data in images)
        )

    assert slow.batch_sizes[: len(images)] == [1] * len(images)
    assert max(slow.batch_sizes[len(images) :]) > 1
    assert [r.json()["results"][0]["detections"] for r in together] == [
        r["results"][0]["detections"] for r in alone
    ]


async def test_lone_request_is_not_held_back(red_model: OnnxModel) -> None:
    async with running_app(red_model) as (_, client):
        response = await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)})

    assert response.json()["results"][0]["timings_ms"]["queue"] < 20.0


async def test_queue_full_returns_503_with_retry_after(red_model: OnnxModel) -> None:
    slow = SlowModel(red_model, delay_s=0.3)
    async with running_app(slow, queue_size=1, max_batch_size=1) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/v1/detect", files={"file": ("a.jpg", JPEG)}) for _ in range(6))
        )
        metrics = (await client.get("/metrics")).text

    shed = [r for r in responses if r.status_code == 503]
    assert shed, [r.status_code for r in responses]
    assert all(r.headers["Retry-After"] == "1" for r in shed)
    assert all(r.json()["error"]["code"] == "queue_full" for r in shed)
    assert any(r.status_code == 200 for r in responses)
    assert 'phone_detection_requests_total{method="multipart",status="rejected"}' in metrics
    assert 'phone_detection_frames_rejected_total{reason="queue_full"}' in metrics


async def test_deadline_exceeded_returns_504(red_model: OnnxModel) -> None:
    slow = SlowModel(red_model, delay_s=0.5)
    async with running_app(slow, deadline_ms=100) as (_, client):
        response = await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)})

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


async def test_failing_batch_fails_its_callers_and_service_stays_ready(
    red_model: OnnxModel,
) -> None:
    flaky = SlowModel(red_model)
    async with running_app(flaky) as (_, client):
        flaky.fail_next = 1  # after the warm-up runs
        failed = await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)})
        ready = await client.get("/readyz")
        after = await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)})

    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "model_error"
    assert "Traceback" not in failed.text
    assert ready.status_code == 200
    assert after.status_code == 200


async def test_models_and_health(red_model: OnnxModel) -> None:
    async with running_app(red_model, max_batch_size=4, max_wait_ms=2.0) as (_, client):
        models = (await client.get("/v1/models")).json()["models"]
        health = await client.get("/healthz")
        ready = await client.get("/readyz")

    (model,) = models
    assert model["input_size"] == [640, 640]
    assert model["phone_classes"] == ["cell phone"]
    assert model["synthetic"] is False
    assert model["dynamic_batch"] is True
    assert model["batcher"]["max_batch_size"] == 4
    assert model["batcher"]["max_wait_ms"] == 2.0
    assert model["batcher"]["batch_window"] == "adaptive"
    assert model["batcher"]["window_ms"] >= 0.0
    # the red-box model takes milliseconds: the 10 s deadline leaves the whole queue usable
    assert model["batcher"]["queue_capacity"] == model["batcher"]["queue_size"] == 64
    assert 0.0 < model["batcher"]["model_ms_per_frame"] < 1000.0
    assert len(model["sha256"]) == 64
    assert health.json() == {"status": "ok"}
    assert ready.json() == {"status": "ready"}


async def test_openapi_lists_every_endpoint_with_examples(red_model: OnnxModel) -> None:
    async with running_app(red_model) as (_, client):
        schema = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")

    assert {"/v1/detect", "/v1/detect/base64", "/v1/models", "/healthz", "/readyz"} <= set(
        schema["paths"]
    )
    assert "examples" in schema["components"]["schemas"]["DetectResponse"]
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text


async def test_unknown_path_has_the_error_shape(red_model: OnnxModel) -> None:
    async with running_app(red_model) as (_, client):
        response = await client.get("/v2/nothing")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
