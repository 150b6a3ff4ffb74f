"""The real server: `phone-detector serve` under uvicorn, drained by SIGTERM."""

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.graphs import red_box_model, save
from tests.utils.images import encode, red_box_image
from tests.utils.server_process import start_server, stop_server

JPEG = encode(red_box_image((1280, 720), (100, 100, 300, 400)), "JPEG", quality=95)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A served heavy red-box model (same answers, ~real model cost), one frame per batch."""
    # Two convs: ~0.2-0.4 s a frame, so 8 requests are still running when SIGTERM comes.
    model = save(red_box_model(heavy_convs=2), tmp_path / "heavy.onnx")
    process, base = start_server(
        model, tmp_path, PHONE_DET_MAX_BATCH_SIZE="1", PHONE_DET_DRAIN_TIMEOUT_S="20"
    )
    yield process, base
    stop_server(process)


def test_serves_detections_over_real_http(server: tuple[subprocess.Popen[bytes], str]) -> None:
    _, base = server

    response = httpx.post(f"{base}/v1/detect", files={"file": ("a.jpg", JPEG)}, timeout=10)

    assert response.status_code == 200
    det = response.json()["results"][0]["detections"][0]
    assert det["box"] == pytest.approx({"x1": 100, "y1": 100, "x2": 300, "y2": 400}, abs=2)


def test_sigterm_answers_accepted_requests_refuses_new_and_exits(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base = server

    async def scenario() -> tuple[list[httpx.Response], httpx.Response | Exception]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            accepted = [
                asyncio.create_task(client.post("/v1/detect", files={"file": ("a.jpg", JPEG)}))
                for _ in range(8)
            ]
            await asyncio.sleep(0.3)  # all 8 are in, the first is running
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.05)
            try:
                late: httpx.Response | Exception = await client.post(
                    "/v1/detect", files={"file": ("a.jpg", JPEG)}
                )
            except httpx.TransportError as exc:
                late = exc
            return list(await asyncio.gather(*accepted)), late

    started = time.monotonic()
    answered, late = asyncio.run(scenario())
    process.wait(timeout=20)

    assert [r.status_code for r in answered] == [200] * 8, [r.text for r in answered]
    assert isinstance(late, httpx.Response), late
    assert late.status_code == 503
    assert late.json()["error"]["code"] == "shutting_down"
    # uvicorn re-raises the signal once shut down: the conventional "ended by SIGTERM" status
    assert process.returncode in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 20
