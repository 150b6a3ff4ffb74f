"""Camera sources end to end, in process, against real streams on loopback: an MJPEG camera
over HTTP (killed and restarted), looping video files, a closed port and a web page."""

import asyncio
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.inference.model import OnnxModel
from tests.sources.streams import PHONE_BOX, MjpegCamera, closed_port, write_clip
from tests.utils.service import running_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The RTSP test camera needs Debian's GStreamer bindings, which live in the system Python.
SYSTEM_PYTHON = "/usr/bin/python3"

FAST_RETRIES: dict[str, Any] = {
    "source_backoff_initial_s": 0.1,
    "source_backoff_max_s": 0.4,
    "source_open_timeout_s": 2.0,
    "source_stall_timeout_s": 2.0,
    "presence_min_hits": 2,
    "presence_window": 3,
}


@pytest.fixture
def camera() -> Iterator[MjpegCamera]:
    camera = MjpegCamera(fps=15).start()
    yield camera
    camera.stop()


async def until(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0, every_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every_s)


async def source(client: httpx.AsyncClient, source_id: str, **headers: str) -> dict[str, Any]:
    response = await client.get(f"/v1/sources/{source_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def write_sources(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


async def test_an_mjpeg_camera_yields_detections_presence_and_metrics(
    red_model: OnnxModel, camera: MjpegCamera, tmp_path: Path
) -> None:
    config = write_sources(
        tmp_path / "sources.yaml",
        f"sources:\n  - id: hall-a-cam-1\n    url: {camera.url}\n    fps: 5\n"
        "    labels: {hall: A, row: '3'}\n",
    )
    async with running_app(red_model, sources_file=config, **FAST_RETRIES) as (_, client):

        async def detected() -> bool:
            body = await source(client, "hall-a-cam-1")
            return body["state"] == "up" and body["presence_open"]

        await until(detected)
        body = await source(client, "hall-a-cam-1")
        text = (await client.get("/metrics")).text

    assert body["labels"] == {"hall": "A", "row": "3"}
    assert body["origin"] == "config"
    assert body["phones"] == 1
    assert body["last_error"] is None
    assert body["frames_decoded"] >= body["frames_sampled"] >= 2
    assert 0 <= body["last_frame_age_s"] < 2
    assert metric(text, "phone_detection_source_up", source="hall-a-cam-1") == 1
    assert metric(text, "phone_detection_source_state", source="hall-a-cam-1", state="up") == 1
    assert metric(text, "phone_detection_source_frames_decoded_total", source="hall-a-cam-1") >= 2
    assert metric(text, "phone_detection_source_frames_sampled_total", source="hall-a-cam-1") >= 2
    assert metric(text, "phone_detection_source_frame_age_seconds_count", source="hall-a-cam-1")
    assert metric(text, "phone_detection_devices_by_source_total", source="hall-a-cam-1") >= 2
    assert metric(text, "phone_detection_presence_active", source="hall-a-cam-1") == 1
    # The red box sits in the left-middle third of the 320x240 frame.
    assert metric(text, "phone_detection_devices_by_region_total", region="center") >= 2
    assert PHONE_BOX[0] < 160 < PHONE_BOX[2]


async def test_a_restarted_camera_is_reconnected_and_counted(
    red_model: OnnxModel, camera: MjpegCamera
) -> None:
    async with running_app(red_model, **FAST_RETRIES) as (_, client):
        added = await client.post("/v1/sources", json={"id": "cam", "url": camera.url, "fps": 5})
        assert added.status_code == 201, added.text

        async def state_is(state: str) -> bool:
            return bool((await source(client, "cam"))["state"] == state)

        await until(lambda: state_is("up"))
        camera.stop()
        await until(lambda: state_is("backoff"))
        down = await source(client, "cam")
        camera.start()  # same port
        await until(lambda: state_is("up"))
        back = await source(client, "cam")
        text = (await client.get("/metrics")).text

    assert down["last_error"]
    assert back["reconnects"] >= 1
    assert back["last_error"] is None
    assert metric(text, "phone_detection_source_reconnects_total", source="cam") >= 1
    assert metric(text, "phone_detection_source_up", source="cam") == 1


async def test_unreachable_and_non_video_sources_back_off_without_hurting_others(
    red_model: OnnxModel, camera: MjpegCamera
) -> None:
    page = camera.url.replace("/stream", "/page")
    nowhere = f"rtsp://127.0.0.1:{closed_port()}/live"
    async with running_app(red_model, **FAST_RETRIES) as (_, client):
        for source_id, url in (("good", camera.url), ("page", page), ("nowhere", nowhere)):
            response = await client.post("/v1/sources", json={"id": source_id, "url": url})
            assert response.status_code == 201, response.text

        async def settled() -> bool:
            states = {s["id"]: s for s in (await client.get("/v1/sources")).json()["sources"]}
            return (
                states["good"]["state"] == "up"
                and states["page"]["last_error"] is not None
                and states["nowhere"]["last_error"] is not None
                and states["nowhere"]["reconnects"] >= 2
            )

        await until(settled)
        states = {s["id"]: s for s in (await client.get("/v1/sources")).json()["sources"]}
        ready = await client.get("/readyz")
        text = (await client.get("/metrics")).text

    assert states["page"]["state"] in ("backoff", "connecting")
    assert states["page"]["last_error"].startswith("not a video")
    assert states["nowhere"]["state"] in ("backoff", "connecting")
    assert "Connection refused" in states["nowhere"]["last_error"]
    assert states["good"]["state"] == "up"
    assert ready.status_code == 200
    assert metric(text, "phone_detection_source_up", source="nowhere") == 0
    assert metric(text, "phone_detection_source_reconnects_total", source="nowhere") >= 2


async def test_sources_are_added_and_removed_at_run_time_with_an_api_key(
    red_model: OnnxModel, camera: MjpegCamera
) -> None:
    key = {"X-API-Key": "operator-key"}
    async with running_app(red_model, api_keys=["operator-key"], **FAST_RETRIES) as (_, client):
        spec = {"id": "cam-9", "url": camera.url, "fps": 2}
        refused = [
            await client.get("/v1/sources"),
            await client.post("/v1/sources", json=spec),
            await client.delete("/v1/sources/cam-9"),
        ]
        created = await client.post("/v1/sources", json=spec, headers=key)
        duplicate = await client.post("/v1/sources", json=spec, headers=key)
        await until(lambda: _is_up(client, "cam-9", key))
        deleted = await client.delete("/v1/sources/cam-9", headers=key)
        gone = await client.get("/v1/sources/cam-9", headers=key)
        deleted_again = await client.delete("/v1/sources/cam-9", headers=key)
        listed = (await client.get("/v1/sources", headers=key)).json()

    assert [r.status_code for r in refused] == [401, 401, 401]
    assert created.status_code == 201
    assert created.json()["state"] == "connecting"
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "source_exists"
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "source_not_found"
    assert deleted_again.status_code == 404
    assert listed == {"sources": []}


async def _is_up(client: httpx.AsyncClient, source_id: str, headers: dict[str, str]) -> bool:
    return bool((await source(client, source_id, **headers))["state"] == "up")


async def test_a_file_source_loops_and_honours_its_roi(
    red_model: OnnxModel, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    write_clip(media / "hall.mp4", frames=5, fps=10)  # 0.5 s of video
    async with running_app(red_model, media_dir=media, **FAST_RETRIES) as (_, client):
        spec = {"id": "replay", "url": "hall.mp4", "fps": 4, "roi": [0.25, 0.0, 1.0, 1.0]}
        created = await client.post("/v1/sources", json=spec)
        assert created.status_code == 201, created.text

        async def looped() -> bool:
            body = await source(client, "replay")
            return body["frames_decoded"] > 10 and body["phones"] == 1

        await until(looped)
        body = await source(client, "replay")
        detect = (await client.get("/metrics")).text  # region metric uses whole-frame coordinates

    assert body["state"] == "up"
    assert body["reconnects"] == 0  # replay restarts are not faults
    assert body["url"] == "hall.mp4"
    assert metric(detect, "phone_detection_devices_by_region_total", region="center") >= 1


async def test_credentials_are_never_returned(red_model: OnnxModel, tmp_path: Path) -> None:
    port = closed_port()
    url = f"rtsp://admin:hunter2@127.0.0.1:{port}/live?channel=1&token=s3cr3t"
    hook = f"http://bot:hook-pass@127.0.0.1:{port}/hook"
    async with running_app(red_model, **FAST_RETRIES) as (_, client):
        created = await client.post(
            "/v1/sources", json={"id": "secret-cam", "url": url, "webhook": hook}
        )
        await until(lambda: _has_error(client, "secret-cam"))
        listed = (await client.get("/v1/sources")).text

    for text in (created.text, listed):
        assert "hunter2" not in text
        assert "admin" not in text
        assert "s3cr3t" not in text
        assert "hook-pass" not in text
    assert f"rtsp://***@127.0.0.1:{port}/live?channel=1&token=***" in listed


async def _has_error(client: httpx.AsyncClient, source_id: str) -> bool:
    return (await source(client, source_id))["last_error"] is not None


@pytest.fixture
def rtsp_camera() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(url, kill, start): GStreamer's RTSP server under the system Python."""
    script = Path(__file__).with_name("rtsp_camera.py")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("GStreamer RTSP server missing: run `make system-deps`")
    port = closed_port()
    processes: list[subprocess.Popen[str]] = []

    def start() -> None:
        process = subprocess.Popen(
            [SYSTEM_PYTHON, str(script), str(port)], stdout=subprocess.PIPE, text=True
        )
        processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"

    def kill() -> None:
        processes[-1].kill()
        processes[-1].wait()
        if processes[-1].stdout is not None:
            processes[-1].stdout.close()

    start()
    yield f"rtsp://viewer:cam-pass@127.0.0.1:{port}/live", kill, start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def test_an_rtsp_camera_is_read_and_reconnected_after_a_restart(
    red_model: OnnxModel, rtsp_camera: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    url, kill, start = rtsp_camera
    async with running_app(red_model, **FAST_RETRIES) as (_, client):
        created = await client.post("/v1/sources", json={"id": "rtsp-cam", "url": url})
        assert created.status_code == 201, created.text

        async def state_is(state: str) -> bool:
            return bool((await source(client, "rtsp-cam"))["state"] == state)

        await until(lambda: state_is("up"), timeout_s=20)
        await until(lambda: _has_phones(client, "rtsp-cam"))
        kill()
        await until(lambda: state_is("backoff"))
        start()
        await until(lambda: state_is("up"), timeout_s=20)
        body = await source(client, "rtsp-cam")

    assert body["reconnects"] >= 1
    assert body["url"].startswith("rtsp://***@127.0.0.1:")


async def _has_phones(client: httpx.AsyncClient, source_id: str) -> bool:
    return (await source(client, source_id))["phones"] == 1


async def test_the_api_refuses_paths_outside_the_media_folder(
    red_model: OnnxModel, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    write_clip(tmp_path / "private.mp4", frames=2)
    refused = []
    async with running_app(red_model, media_dir=media, **FAST_RETRIES) as (_, client):
        for url in ("file:///etc/passwd", str(tmp_path / "private.mp4"), "../private.mp4",
                    "ftp://127.0.0.1/x.mp4", "concat:a.mp4|b.mp4"):  # fmt: skip
            refused.append(await client.post("/v1/sources", json={"id": "x", "url": url}))
        listed = (await client.get("/v1/sources")).json()

    assert [r.status_code for r in refused] == [422] * 5
    assert {r.json()["error"]["code"] for r in refused} == {"invalid_source"}
    assert listed == {"sources": []}
