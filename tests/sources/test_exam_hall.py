"""An exam-hall config (several cameras, one of them down) in a real `phone-detector serve`:
events and per-source metrics show in /metrics and GET /v1/sources."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sources.streams import MjpegCamera, closed_port, write_clip
from tests.sources.test_live_sources import metric
from tests.utils.graphs import red_box_model, save
from tests.utils.server_process import start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture
def hall(tmp_path: Path) -> Iterator[tuple[str, MjpegCamera]]:
    camera = MjpegCamera(fps=10).start()
    write_clip(tmp_path / "row-3.mp4", frames=10, fps=10)
    config = tmp_path / "sources.yaml"
    config.write_text(
        "sources:\n"
        f"  - id: hall-a-front\n    url: {camera.url}\n    fps: 4\n    labels: {{hall: A}}\n"
        "  - id: hall-a-row-3\n    url: row-3.mp4\n    fps: 4\n    roi: [0, 0, 1, 1]\n"
        f"  - id: hall-b-back\n    url: rtsp://exam:pw@127.0.0.1:{closed_port()}/s1\n"
    )
    process: subprocess.Popen[bytes]
    process, base = start_server(
        save(red_box_model(), tmp_path / "red.onnx"),
        tmp_path,
        PHONE_DET_SOURCES_FILE=str(config),
        PHONE_DET_PRESENCE_MIN_HITS="2",
        PHONE_DET_PRESENCE_WINDOW="3",
        PHONE_DET_SOURCE_BACKOFF_INITIAL_S="0.2",
        PHONE_DET_SOURCE_BACKOFF_MAX_S="1",
    )
    yield base, camera
    stop_server(process)
    camera.stop()


def test_an_exam_hall_config_runs_and_reports_per_source(
    hall: tuple[str, MjpegCamera], tmp_path: Path
) -> None:
    base, _ = hall
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sources = {s["id"]: s for s in httpx.get(f"{base}/v1/sources").json()["sources"]}
        if (
            sources["hall-a-front"]["presence_open"]
            and sources["hall-a-row-3"]["presence_open"]
            and sources["hall-b-back"]["reconnects"] >= 1
        ):
            break
        time.sleep(0.2)
    text = httpx.get(f"{base}/metrics").text
    ready = httpx.get(f"{base}/readyz")

    assert sources["hall-a-front"]["state"] == "up"
    assert sources["hall-a-row-3"]["state"] == "up"
    assert sources["hall-b-back"]["state"] in ("backoff", "connecting")
    assert sources["hall-b-back"]["url"].startswith("rtsp://***@")
    assert ready.status_code == 200
    for name in ("hall-a-front", "hall-a-row-3"):
        assert sources[name]["presence_open"]
        assert metric(text, "phone_detection_presence_active", source=name) == 1
        assert metric(text, "phone_detection_source_up", source=name) == 1
        assert metric(text, "phone_detection_source_frames_decoded_total", source=name) > 0
        assert metric(text, "phone_detection_source_frames_sampled_total", source=name) > 0
        assert metric(text, "phone_detection_source_frame_age_seconds_count", source=name) > 0
        assert metric(text, "phone_detection_devices_by_source_total", source=name) > 0
    assert metric(text, "phone_detection_source_up", source="hall-b-back") == 0
    assert metric(text, "phone_detection_source_state", source="hall-b-back", state="up") == 0
    assert metric(text, "phone_detection_source_reconnects_total", source="hall-b-back") >= 1
    assert metric(text, "phone_detection_presence_events_total", state="opened") >= 2
    for pinned in (
        'phone_detection_source_decode_errors_total{source="hall-b-back"}',
        'phone_detection_source_frames_skipped_total{reason="busy",source="hall-a-front"}',
        'phone_detection_source_webhook_deliveries_total{outcome="failed"}',
    ):
        assert pinned in text
    log = (tmp_path / "server.log").read_text()
    assert "exam:pw" not in log
    assert "hall-b-back" in log
