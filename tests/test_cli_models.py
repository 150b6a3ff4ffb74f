"""`phone-detector model build/info` and a built model through `detect`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.images import encode, red_box_image

CLI = str(Path(sys.executable).parent / "phone-detector")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *map(str, args)], capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def built_s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "s.onnx"
    done = _run("model", "build", "--variant", "S", "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    return out


@pytest.mark.slow
def test_info_json_of_built_s_says_synthetic_with_table_size(built_s: Path) -> None:
    done = _run("model", "info", built_s, "--json")

    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["synthetic"] is True
    assert info["variant"] == "S"
    assert info["parameters"] == pytest.approx(16.3e6, rel=0.05)
    assert info["gflops"] == pytest.approx(37.8, rel=0.05)
    assert info["input_size"] == [640, 640]
    assert info["phone_classes"] == ["cell phone"]
    assert info["producer"] == "phone-detector"
    assert len(info["sha256"]) == 64


@pytest.mark.slow
def test_built_model_runs_through_detect(built_s: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encode(red_box_image((1280, 720), (10, 10, 100, 100)), "JPEG"))

    text = _run("detect", photo, "--model", built_s)
    as_json = _run("detect", photo, "--model", built_s, "--json")

    assert text.returncode == 0, text.stderr
    assert "synthetic model: detections are meaningless" in text.stderr
    report = json.loads(as_json.stdout)
    assert report["model"]["synthetic"] is True
    assert report["results"][0]["width"] == 1280


def test_build_refuses_an_unknown_variant(tmp_path: Path) -> None:
    done = _run("model", "build", "--variant", "XL", "--out", tmp_path / "x.onnx")

    assert done.returncode == 2
    assert "choose one of N, T, S, M" in done.stderr
