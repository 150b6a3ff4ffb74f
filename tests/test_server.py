"""The real server: `phone-detector serve` under uvicorn, drained by SIGTERM."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.graphs import red_box_model, save
from tests.utils.images import encode, red_box_image

CLI = str(Path(sys.executable).parent / "phone-detector")
JPEG = encode(red_box_image((1280, 720), (100, 100, 300, 400)), "JPEG", quality=95)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A served heavy red-box model (same answers, ~real model cost), one frame per batch."""
    model = save(red_box_model(heavy_convs=1), tmp_path / "heavy.onnx")
    port = _free_port()
    env = {
        **os.environ,
        "PHONE_DET_MODEL_PATH": str(model),
        "PHONE_DET_MAX_BATCH_SIZE": "1",
        "PHONE_DET_ALLOW_FETCH": "false",
        "PHONE_DET_DRAIN_TIMEOUT_S": "20",
        "PHONE_DET_MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    process = subprocess.Popen(
        [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"server not ready: {process.communicate()[0].decode()[-2000:]}")
    yield process, base
    if process.poll() is None:
        process.kill()
    process.communicate()


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
