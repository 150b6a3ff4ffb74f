"""WebSocket /v1/stream against a real server with a real WebSocket client."""

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from PIL import Image

from tests.utils.graphs import red_box_model, save
from tests.utils.images import encode, red_box_image
from tests.utils.server_process import start_server, stop_server

PHONE = encode(red_box_image((640, 480), (100, 120, 220, 300)), "JPEG", quality=95)
EMPTY = encode(Image.new("RGB", (640, 480), (0, 0, 200)), "JPEG", quality=95)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("stream")
    model = save(red_box_model(heavy_convs=1), folder / "heavy.onnx")
    process: subprocess.Popen[bytes]
    process, base = start_server(
        model,
        folder,
        PHONE_DET_PRESENCE_MIN_HITS="2",
        PHONE_DET_PRESENCE_WINDOW="3",
        PHONE_DET_PRESENCE_CLEAR_AFTER_S="0",
        PHONE_DET_API_KEYS='["stream-key"]',
    )
    yield base
    stop_server(process)


def _ws_url(base: str, query: str) -> str:
    return base.replace("http://", "ws://") + "/v1/stream?" + query


async def _collect(ws: Any, until: Any, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while not until(messages):
            messages.append(json.loads(await ws.recv()))
    return messages


def test_frames_are_answered_in_order_with_their_numbers(server: str) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(_ws_url(server, "api_key=stream-key")) as ws:
            for frame in (PHONE, EMPTY, PHONE):
                await ws.send(frame)
                await asyncio.sleep(0.3)  # slower than the model: nothing is dropped
            return await _collect(ws, lambda m: sum(x["type"] == "detections" for x in m) == 3)

    messages = asyncio.run(scenario())
    detections = [m for m in messages if m["type"] == "detections"]
    assert [m["frame"] for m in detections] == [1, 2, 3]
    assert [m["count"] for m in detections] == [1, 0, 1]
    box = detections[0]["detections"][0]["box"]
    assert (box["x1"], box["y1"], box["x2"], box["y2"]) == pytest.approx(
        (100, 120, 220, 300), abs=2
    )
    assert not [m for m in messages if m["type"] == "dropped"]


def test_a_fast_sender_gets_the_newest_frames_and_a_drop_report(server: str) -> None:
    sent = 30

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(_ws_url(server, "api_key=stream-key")) as ws:
            for _ in range(sent):
                await ws.send(PHONE)

            def accounted(m: list[dict[str, Any]]) -> bool:
                answered = sum(x["type"] == "detections" for x in m)
                dropped = max([x["dropped_total"] for x in m if x["type"] == "dropped"] or [0])
                return answered + dropped == sent

            return await _collect(ws, accounted)

    messages = asyncio.run(scenario())
    frames = [m["frame"] for m in messages if m["type"] == "detections"]
    dropped = [f for m in messages if m["type"] == "dropped" for f in m["frames"]]
    assert dropped, "30 frames at once must outrun the model"
    assert frames == sorted(frames)
    assert frames[-1] == sent  # the newest frame is always answered
    assert sorted(frames + dropped) == list(range(1, sent + 1))
    metrics = httpx.get(f"{server}/metrics").text
    assert 'phone_detection_frames_rejected_total{reason="stream_dropped"}' in metrics


def test_presence_opens_after_n_of_m_and_closes(server: str) -> None:
    async def scenario() -> list[dict[str, Any]]:
        url = _ws_url(server, "source=exam-hall-2")
        async with websockets.connect(
            url, additional_headers={"Authorization": "Bearer stream-key"}
        ) as ws:
            for frame in (PHONE, EMPTY, PHONE, PHONE, EMPTY):
                await ws.send(frame)
                await asyncio.sleep(0.25)
            return await _collect(ws, lambda m: sum(x["type"] == "presence" for x in m) == 2)

    messages = asyncio.run(scenario())
    events = [(m["state"], m["frame"]) for m in messages if m["type"] == "presence"]
    # 2 of the last 3 frames: frame 3 opens; the first phone-free frame after it closes
    assert events == [("opened", 3), ("closed", 5)]
    assert all(m["source"] == "exam-hall-2" for m in messages if m["type"] == "presence")
    metrics = httpx.get(f"{server}/metrics").text
    assert 'phone_detection_presence_active{source="exam-hall-2"} 0.0' in metrics
    assert 'phone_detection_presence_events_total{state="opened"} 1.0' in metrics


def test_bad_frame_gets_an_error_and_the_stream_goes_on(server: str) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(_ws_url(server, "api_key=stream-key")) as ws:
            await ws.send(b"not a jpeg")
            await asyncio.sleep(0.2)
            await ws.send(PHONE)
            return await _collect(ws, lambda m: any(x["type"] == "detections" for x in m))

    messages = asyncio.run(scenario())
    assert messages[0]["type"] == "error"
    assert messages[0]["frame"] == 1
    assert messages[0]["error"]["code"] == "unsupported_format"
    assert messages[-1]["frame"] == 2


def test_stream_refuses_a_missing_key(server: str) -> None:
    async def scenario() -> None:
        async with websockets.connect(_ws_url(server, "api_key=wrong")):
            pass

    # closed before the handshake completes: uvicorn answers the upgrade with 403
    with pytest.raises(websockets.InvalidStatus, match="403"):
        asyncio.run(scenario())


def test_render_returns_an_annotated_image(server: str) -> None:
    response = httpx.post(
        f"{server}/v1/detect/render",
        files={"file": ("a.jpg", PHONE)},
        params={"format": "png"},
        headers={"X-API-Key": "stream-key"},
        timeout=10,
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-phone-count"] == "1"
    assert response.headers["x-model-synthetic"] == "false"
    import io

    with Image.open(io.BytesIO(response.content)) as image:
        assert image.size == (640, 480)
        r, g, _b = image.convert("RGB").getpixel((101, 200))  # on the drawn box edge
        assert r > 200
        assert g < 100


def test_render_rejects_bad_input_as_json(server: str, tmp_path: Path) -> None:
    response = httpx.post(
        f"{server}/v1/detect/render",
        files={"file": ("a.jpg", b"nope")},
        headers={"X-API-Key": "stream-key"},
    )

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_format"
