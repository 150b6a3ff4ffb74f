"""The `phone-detector` console script, run as a real process."""

import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.utils.images import encode, red_box_image

CLI = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "phone-detector")


def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *map(str, args)], capture_output=True, text=True, timeout=60, env=env, check=False
    )


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(red_box_image((1280, 720), (400, 200, 560, 500)), "JPEG", quality=95))
    return path


def test_detect_json_prints_detections_and_timings(red_model_path: Path, photo: Path) -> None:
    done = _run("detect", photo, "--model", red_model_path, "--json")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model"] == {"name": "red_box", "variant": "custom", "synthetic": False}
    (result,) = report["results"]
    assert result["image"] == str(photo)
    assert (result["width"], result["height"], result["count"]) == (1280, 720, 1)
    (det,) = result["detections"]
    assert det["label"] == "phone"
    assert det["class_id"] == 67
    assert det["score"] == 0.9
    assert det["box"] == pytest.approx({"x1": 400, "y1": 200, "x2": 560, "y2": 500}, abs=2)
    assert set(result["timings_ms"]) == {
        "decode",
        "preprocess",
        "inference",
        "postprocess",
        "total",
    }


def test_detect_text_output_and_render(red_model_path: Path, photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated.png"

    done = _run("detect", photo, "--model", red_model_path, "--render", out)

    assert done.returncode == 0, done.stderr
    assert "1 phone(s) in 1280x720" in done.stdout
    assert "phone 0.90 [400, 200, 560, 500]" in done.stdout
    with Image.open(out) as drawn:
        assert drawn.size == (1280, 720)
        # the box outline is drawn in pure-ish red over the blue background at its left edge
        r, _g, b = drawn.convert("RGB").getpixel((400, 350))
        assert r > 200
        assert b < 100


def test_bad_image_is_one_line_and_exit_1(red_model_path: Path, tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is text, not a JPEG")

    done = _run("detect", fake, "--model", red_model_path)

    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "not a supported image" in done.stderr
    assert "Traceback" not in done.stderr


def test_non_onnx_model_is_refused_with_exit_3(photo: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not a model")

    done = _run("detect", photo, "--model", bogus)

    assert done.returncode == 3
    assert done.stderr.startswith("error: ")
    assert "expected a DAMO-YOLO" in done.stderr
    assert "Traceback" not in done.stderr


class _FileHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server() -> Iterator[tuple[str, type[_FileHandler]]]:
    handler = type("Handler", (_FileHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model.onnx", handler
    server.shutdown()
    server.server_close()


def test_fetch_downloads_verifies_and_renames(
    file_server: tuple[str, type[_FileHandler]], red_model_path: Path, tmp_path: Path
) -> None:
    url, handler = file_server
    handler.payload = red_model_path.read_bytes()

    done = _run("model", "fetch", "damoyolo_tinynasL25_S_460", "--out", tmp_path, "--url", url)

    assert done.returncode == 0, done.stderr
    target = tmp_path / "damoyolo_tinynasL25_S_460.onnx"
    assert done.stdout.strip() == str(target)
    assert target.read_bytes() == handler.payload
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_fetch_of_a_non_model_leaves_nothing(
    file_server: tuple[str, type[_FileHandler]], tmp_path: Path
) -> None:
    url, handler = file_server
    handler.payload = b"<html>captive portal</html>"

    done = _run("model", "fetch", "damoyolo_tinynasL25_S_460", "--out", tmp_path, "--url", url)

    assert done.returncode == 4
    assert "not a usable model" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_fetch_without_network_fails_fast_with_one_line(tmp_path: Path) -> None:
    # Port 9 (discard) is closed on loopback: the same "cannot connect" as no network.
    started = time.monotonic()
    done = _run(
        "model", "fetch", "damoyolo_tinynasL25_S_460", "--out", tmp_path,
        "--url", "http://127.0.0.1:9/model.onnx",
    )  # fmt: skip

    assert time.monotonic() - started < 15
    assert done.returncode == 4
    assert done.stderr.startswith("error: cannot download")
    assert done.stderr.strip().count("\n") == 0
    assert list(tmp_path.iterdir()) == []


def test_fetch_of_unknown_name_lists_known_ones(tmp_path: Path) -> None:
    done = _run("model", "fetch", "yolov99", "--out", tmp_path)

    assert done.returncode == 4
    assert "unknown model 'yolov99'" in done.stderr
    assert "damoyolo_tinynasL25_S_460" in done.stderr
