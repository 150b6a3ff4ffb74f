"""`model optimize`: the ORT-optimised fp32 model, the int8 (QDQ) model and their report."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from app.inference.builder import build_model_file
from app.inference.model import OnnxModel
from app.inference.optimize import (
    INT8_TAG,
    OPTIMIZED_TAG,
    compare_outputs,
    default_outputs,
    head_nodes,
    load_frames,
    optimize_model,
)
from tests.utils.images import encode, red_box_image

CLI = str(Path(sys.executable).parent / "phone-detector")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *map(str, args)], capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def source_n(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_file("N", tmp_path_factory.mktemp("src") / "n.onnx")


@pytest.fixture(scope="module")
def optimized(source_n: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("opt") / "n.opt.onnx"
    started = time.perf_counter()
    report = optimize_model(
        source_n,
        out=out,
        calibration_frames=4,
        held_out_frames=2,
        timing_runs=2,
        intra_op_threads=1,
    )
    report["test_seconds"] = time.perf_counter() - started
    return report


def test_outputs_are_named_after_the_source(tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"

    assert default_outputs(source, None) == (tmp_path / "m.opt.onnx", tmp_path / "m.int8.onnx")
    assert default_outputs(source, tmp_path / "x.onnx") == (
        tmp_path / "x.onnx",
        tmp_path / "x.int8.onnx",
    )


def test_quantizing_n_is_fast(optimized: dict[str, Any]) -> None:
    assert optimized["int8"]["seconds"] < 30
    assert optimized["test_seconds"] < 60


def test_written_models_pass_the_contract_and_keep_metadata(
    optimized: dict[str, Any], source_n: Path
) -> None:
    source = OnnxModel(source_n, intra_op_threads=1)
    opt = OnnxModel(Path(optimized["optimized"]["path"]), intra_op_threads=1)
    int8 = OnnxModel(Path(optimized["int8"]["path"]), intra_op_threads=1)

    for model in (opt, int8):
        assert model.input_dtype is np.uint8  # the in-memory uint8 Cast still goes in front
        assert model.info.synthetic is True
        assert model.info.variant == "N"
        assert model.info.input_size_px == (416, 416)
        assert model.info.class_names == source.info.class_names
        assert model.info.phone_class_ids == source.info.phone_class_ids
        assert model.info.dynamic_batch is True
        assert model.info.metadata["names"] == source.info.metadata["names"]
    assert opt.info.metadata["optimized"] == OPTIMIZED_TAG
    assert int8.info.metadata["quantization"] == INT8_TAG
    assert "quantization" not in opt.info.metadata
    for path in (optimized["optimized"]["path"], optimized["int8"]["path"]):
        graph = onnx.load(path).graph
        assert [i.name for i in graph.input] == ["images"]
        assert [o.name for o in graph.output] == ["scores", "boxes"]
    leftovers = [p.name for p in Path(optimized["int8"]["path"]).parent.iterdir()]
    assert sorted(leftovers) == ["n.int8.onnx", "n.opt.onnx"]  # no temporary files left


def test_optimized_fp32_matches_the_source(optimized: dict[str, Any], source_n: Path) -> None:
    source = OnnxModel(source_n, intra_op_threads=1)
    opt = OnnxModel(Path(optimized["optimized"]["path"]), intra_op_threads=1)
    frames = np.stack(load_frames((416, 416), calibration_dir=None, held_out_frames=2).held_out)

    ref_scores, ref_boxes = source.run(frames)
    scores, boxes = opt.run(frames)

    np.testing.assert_allclose(scores, ref_scores, atol=1e-3)
    np.testing.assert_allclose(boxes, ref_boxes, atol=1e-3)
    assert optimized["optimized"]["max_score_diff"] <= 1e-3
    assert optimized["optimized"]["detections"]["differ"] == 0


def test_int8_report_matches_a_recomputation(optimized: dict[str, Any], source_n: Path) -> None:
    source = OnnxModel(source_n, intra_op_threads=1)
    int8 = OnnxModel(Path(optimized["int8"]["path"]), intra_op_threads=1)
    held_out = load_frames((416, 416), calibration_dir=None, held_out_frames=2).held_out

    reference = [source.run(f[None]) for f in held_out]
    quantized = [int8.run(f[None]) for f in held_out]

    for scores, boxes in quantized:
        assert np.isfinite(scores).all()
        assert np.isfinite(boxes).all()
        assert scores.min() >= 0.0
        assert scores.max() <= 1.0
    max_score = max(
        float(np.abs(r[0] - q[0]).max()) for r, q in zip(reference, quantized, strict=True)
    )
    max_box = max(
        float(np.abs(r[1] - q[1]).max()) for r, q in zip(reference, quantized, strict=True)
    )
    entry = optimized["int8"]
    assert entry["max_score_diff"] == pytest.approx(max_score, abs=1e-5)
    assert entry["max_box_diff_px"] == pytest.approx(max_box, abs=1e-3)
    assert entry == {**entry, **compare_outputs(reference, quantized, 0.35, 0.45)}
    assert entry["latency_ms"] > 0
    assert entry["speedup"] == pytest.approx(
        optimized["fp32"]["latency_ms"] / entry["latency_ms"], rel=1e-2
    )
    assert optimized["calibration"] == {"source": "synthetic", "frames": 4}
    assert optimized["held_out_frames"] == 2


def test_int8_keeps_the_head_in_float(optimized: dict[str, Any], source_n: Path) -> None:
    graph = onnx.load(optimized["int8"]["path"]).graph
    producers = {out: node for node in graph.node for out in node.output}

    quantized_ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= quantized_ops
    for node in graph.node:
        if node.op_type in ("Softmax", "MatMul") or node.output[0] in ("scores", "boxes"):
            feeding = [producers[i].op_type for i in node.input if i in producers]
            assert "DequantizeLinear" not in feeding, node.name
    # The head (last convs onwards) of the source: the class and box conv of each level.
    model = onnx.load(str(source_n))
    head = set(head_nodes(model))
    head_ops = [node.op_type for node in model.graph.node if node.name in head]
    assert head_ops.count("Conv") == 6
    assert {"Sigmoid", "Softmax", "MatMul"} <= set(head_ops)


def test_cli_prints_the_report_without_int8(source_n: Path, tmp_path: Path) -> None:
    out = tmp_path / "fast.onnx"

    done = _run("model", "optimize", source_n, "--out", out, "--no-int8")

    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert not (tmp_path / "fast.int8.onnx").exists()
    assert "fp32" in done.stdout
    assert "optimized" in done.stdout
    assert "ms/image" in done.stdout
    assert "max |score diff|" in done.stdout
    assert done.stderr == ""


@pytest.mark.slow
def test_cli_json_with_calibration_dir_and_int8_through_detect(
    source_n: Path, tmp_path: Path
) -> None:
    calibration = tmp_path / "calib"
    calibration.mkdir()
    for i in range(5):
        box = (50 + 40 * i, 60, 200 + 40 * i, 400)
        (calibration / f"{i}.jpg").write_bytes(encode(red_box_image((640, 480), box), "JPEG"))
    out = tmp_path / "n.opt.onnx"

    done = _run(
        "model", "optimize", source_n, "--out", out, "--calibration-dir", calibration, "--json"
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["calibration"] == {"source": str(calibration), "frames": 4}
    assert report["held_out_frames"] == 4 + 1
    int8 = report["int8"]
    assert int8["path"] == str(tmp_path / "n.int8.onnx")
    assert int8["speedup"] > 0
    assert {"max_score_diff", "max_box_diff_px", "detections"} <= int8.keys()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encode(red_box_image((1280, 720), (10, 10, 100, 100)), "JPEG"))
    detected = _run("detect", photo, "--model", int8["path"], "--json")
    assert detected.returncode == 0, detected.stderr
    assert json.loads(detected.stdout)["model"]["synthetic"] is True


def test_cli_errors_are_one_line(source_n: Path, tmp_path: Path) -> None:
    missing = _run("model", "optimize", tmp_path / "none.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = _run("model", "optimize", source_n, "--calibration-dir", empty)
    onto_source = _run("model", "optimize", source_n, "--out", source_n)
    not_onnx = tmp_path / "bad.onnx"
    not_onnx.write_bytes(b"not a model")
    broken = _run("model", "optimize", not_onnx)

    assert missing.returncode == 3
    assert missing.stderr.strip().count("\n") == 0
    assert "not found" in missing.stderr
    assert no_images.returncode == 2
    assert "no images" in no_images.stderr
    assert onto_source.returncode == 2
    assert "overwrite" in onto_source.stderr
    assert broken.returncode == 3
    assert "Traceback" not in broken.stderr
