"""`phone-detector model optimize`: a saved ORT-optimised fp32 model and an int8 variant.

Two files can be written next to (or instead of) a DAMO-YOLO export, both with the same
contract (input `images` [B, 3, H, W] float32, outputs `scores` and `boxes`) and the
source's metadata, so `OnnxModel` and `phone-detector detect` take them unchanged:

* the fp32 graph as onnxruntime leaves it at ORT_ENABLE_EXTENDED (constant folding, Conv +
  activation fusions), metadata `optimized` = "ort-extended". ORT_ENABLE_ALL is not saved:
  its NCHWc layout nodes are specific to the CPU that wrote them. The service still applies
  ORT_ENABLE_ALL when it loads the file; what the saved graph saves is load time.
* an int8 model from static QDQ quantization (onnxruntime.quantization): uint8 activations,
  per-channel int8 weights, ranges calibrated on letterboxed frames (a folder of images,
  or deterministic synthetic scenes), metadata `quantization` = "int8-qdq". The head's
  output ops (the last convs and everything after them: sigmoid, softmax, the box integral
  and decode) stay float, so scores and boxes are not rounded to 8 bits.

The report compares the models on held-out frames the calibration never saw: latency per
image at batch 1 with the service's session options (median of interleaved runs after a
warm-up), the int8 speed-up, the largest absolute score and box (input pixels) differences
against the source fp32 model, and how many detections above the score threshold differ.
"""

from __future__ import annotations

import io
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image, ImageDraw

from app.errors import DetectorError, ImageDecodeError, ModelContractError
from app.inference.files import write_atomically
from app.inference.model import OnnxModel
from app.inference.postprocess import class_aware_nms
from app.inference.preprocess import decode_for_model, letterbox

OPTIMIZED_TAG = "ort-extended"
INT8_TAG = "int8-qdq"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
SYNTHETIC_CALIBRATION_FRAMES = 16
SYNTHETIC_HELD_OUT_FRAMES = 4
MAX_CALIBRATION_IMAGES = 200
HOLD_OUT_EVERY = 5  # of a calibration folder with >= 5 images, every 5th is held out
CALIBRATION_SEED = 1
HELD_OUT_SEED = 2
MATCH_IOU = 0.5
_MAX_PIXELS = 100_000_000
_SCENE_SIZES = ((1280, 720), (640, 480), (720, 1280), (1920, 1080))


@dataclass(frozen=True, slots=True)
class Frames:
    """Letterboxed uint8 frames [3, H, W] for calibration and for the comparison."""

    calibration: list[np.ndarray]
    held_out: list[np.ndarray]
    source: str  # "synthetic" or the calibration folder


def default_outputs(source: Path, out: Path | None) -> tuple[Path, Path]:
    """(optimised fp32 path, int8 path): `out` or <stem>.opt.onnx, and <stem>.int8.onnx."""
    optimized = out or source.with_name(f"{source.stem}.opt.onnx")
    stem = optimized.stem.removesuffix(".opt")
    return optimized, optimized.with_name(f"{stem}.int8.onnx")


def optimize_model(
    source: Path,
    *,
    out: Path | None = None,
    int8: bool = True,
    calibration_dir: Path | None = None,
    calibration_frames: int = SYNTHETIC_CALIBRATION_FRAMES,
    held_out_frames: int = SYNTHETIC_HELD_OUT_FRAMES,
    timing_runs: int = 10,
    intra_op_threads: int = 2,
    score_threshold: float = 0.35,
    iou_threshold: float = 0.45,
    labels_path: Path | None = None,
    phone_classes: list[str] | None = None,
) -> dict[str, Any]:
    """Write the ORT-optimised fp32 model (and with `int8` the int8 one); return the report.

    Raises ModelNotFoundError / ModelContractError for a source that is not a DAMO-YOLO
    export or that onnxruntime cannot optimise or quantize, ImageDecodeError for a
    calibration image that cannot be read, and ValueError when an output would overwrite
    the source.
    """

    def load(path: Path) -> OnnxModel:
        return OnnxModel(
            path,
            intra_op_threads=intra_op_threads,
            labels_path=labels_path,
            phone_classes=phone_classes,
        )

    reference = load(source)  # contract check of the source before any work
    optimized_path, int8_path = default_outputs(source, out)
    for target in (optimized_path, int8_path) if int8 else (optimized_path,):
        if target.resolve() == source.resolve():
            raise ValueError(f"{target} is the source model; choose another --out")
    metadata = dict(reference.info.metadata)
    frames = load_frames(
        reference.info.input_size_px,
        calibration_dir=calibration_dir,
        calibration_frames=calibration_frames,
        held_out_frames=held_out_frames,
    )

    started = time.perf_counter()
    write_optimized(source, optimized_path, metadata)
    optimize_s = time.perf_counter() - started
    models: dict[str, OnnxModel] = {"fp32": reference, "optimized": load(optimized_path)}
    quantize_s = None
    if int8:
        started = time.perf_counter()
        write_int8(source, int8_path, metadata, frames.calibration)
        quantize_s = time.perf_counter() - started
        models["int8"] = load(int8_path)

    latency = time_models(models, frames.held_out[0][None], runs=timing_runs)
    outputs = {
        name: [model.run(f[None]) for f in frames.held_out] for name, model in models.items()
    }
    report: dict[str, Any] = {
        "source": str(source),
        "variant": reference.info.variant,
        "synthetic": reference.info.synthetic,
        "input_size": list(reference.info.input_size_px),
        "intra_op_threads": intra_op_threads,
        "timing_runs": timing_runs,
        "score_threshold": score_threshold,
        "calibration": {"source": frames.source, "frames": len(frames.calibration)}
        if int8
        else None,
        "held_out_frames": len(frames.held_out),
        "fp32": {"path": str(source), "latency_ms": latency["fp32"]},
        "optimized": {
            "path": str(optimized_path),
            "seconds": round(optimize_s, 2),
            "latency_ms": latency["optimized"],
            **compare_outputs(
                outputs["fp32"], outputs["optimized"], score_threshold, iou_threshold
            ),
        },
        "int8": None,
    }
    if int8:
        report["int8"] = {
            "path": str(int8_path),
            "seconds": round(quantize_s or 0.0, 2),
            "latency_ms": latency["int8"],
            "speedup": round(latency["fp32"] / latency["int8"], 3),
            **compare_outputs(outputs["fp32"], outputs["int8"], score_threshold, iou_threshold),
        }
    return report


def write_optimized(source: Path, target: Path, metadata: dict[str, str]) -> None:
    """Save `source` as onnxruntime optimises it at ORT_ENABLE_EXTENDED, atomically."""
    with tempfile.TemporaryDirectory(prefix="phone-detector-opt-") as tmp:
        raw = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(raw)
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
            model = onnx.load(str(raw))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelContractError(f"onnxruntime could not optimise {source}: {exc}") from exc
    _check_io(onnx.load(str(source), load_external_data=False), model, target)
    _set_metadata(model, {**metadata, "optimized": OPTIMIZED_TAG})
    _save_atomically(model, target)


def write_int8(
    source: Path, target: Path, metadata: dict[str, str], calibration: list[np.ndarray]
) -> None:
    """Static QDQ int8 quantization of `source` calibrated on `calibration`, atomically."""
    if not calibration:
        raise ValueError("no calibration frames")
    with tempfile.TemporaryDirectory(prefix="phone-detector-int8-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        with _quiet_quantization(), _as_contract_error(f"onnxruntime could not quantize {source}"):
            # Shape inference and basic folding first, as onnxruntime recommends.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            graph = onnx.load(str(prepared))
            for index, node in enumerate(graph.graph.node):
                node.name = node.name or f"{node.op_type}_{index}"  # exclusion is by name
            onnx.save(graph, str(prepared))
            input_name = graph.graph.input[0].name
            quantize_static(
                str(prepared),
                str(quantized),
                _FrameReader(input_name, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                # uint8 activations x int8 weights, 7-bit weights: the pairing onnxruntime
                # recommends for x86 CPUs without VNNI (no int16 saturation in the kernels).
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=True,
                nodes_to_exclude=head_nodes(graph),
            )
        model = onnx.load(str(quantized))
    _check_io(onnx.load(str(source), load_external_data=False), model, target)
    _set_metadata(model, {**metadata, "quantization": INT8_TAG})
    _save_atomically(model, target)


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes after the network's last convolutions, those convs included.

    A node is in the head when no Conv is reachable downstream of it: the class and box
    convs of each level, the sigmoid, softmax, reshapes and the box decode.
    """
    graph = model.graph
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    feeds_conv = [False] * len(graph.node)
    # ONNX nodes are topologically sorted: walk backwards so consumers are settled first.
    for index in range(len(graph.node) - 1, -1, -1):
        node = graph.node[index]
        feeds_conv[index] = any(
            graph.node[c].op_type == "Conv" or feeds_conv[c]
            for name in node.output
            for c in consumers.get(name, [])
        )
    return [node.name for index, node in enumerate(graph.node) if not feeds_conv[index]]


def load_frames(
    input_size_px: tuple[int, int],
    *,
    calibration_dir: Path | None,
    calibration_frames: int = SYNTHETIC_CALIBRATION_FRAMES,
    held_out_frames: int = SYNTHETIC_HELD_OUT_FRAMES,
) -> Frames:
    """Calibration and held-out frames, letterboxed as the service does.

    Held out are always `held_out_frames` synthetic scenes (another seed than the
    calibration scenes), plus every 5th image of a calibration folder of 5 or more.
    """
    held_out = [
        _letterboxed(data, input_size_px)
        for data in synthetic_scenes(held_out_frames, HELD_OUT_SEED)
    ]
    if calibration_dir is None:
        calibration = [
            _letterboxed(data, input_size_px)
            for data in synthetic_scenes(calibration_frames, CALIBRATION_SEED)
        ]
        return Frames(calibration, held_out, "synthetic")
    paths = calibration_images(calibration_dir)[:MAX_CALIBRATION_IMAGES]
    calibration = []
    for index, path in enumerate(paths):
        try:
            frame = _letterboxed(path.read_bytes(), input_size_px)
        except (OSError, DetectorError) as exc:
            reason = exc.message if isinstance(exc, DetectorError) else exc.strerror
            raise ImageDecodeError(f"calibration image {path}: {reason}") from exc
        if len(paths) >= HOLD_OUT_EVERY and index % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1:
            held_out.append(frame)
        else:
            calibration.append(frame)
    return Frames(calibration, held_out, str(calibration_dir))


def calibration_images(folder: Path) -> list[Path]:
    """The image files directly in `folder`, by name; ValueError when there are none."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    paths = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return paths


def synthetic_scenes(count: int, seed: int) -> list[bytes]:
    """`count` deterministic JPEG scenes in camera sizes: a tinted, noisy background with
    flat rectangles, ellipses, noise-textured patches and phone-like shapes (a dark body
    with a lighter screen)."""
    rng = np.random.default_rng(seed)
    scenes = []
    for index in range(count):
        width, height = _SCENE_SIZES[index % len(_SCENE_SIZES)]
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0.0, 1.0, height)[:, None, None]
        pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, 6, (height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(4, 10))):
            w = int(rng.integers(width // 20, width // 3))
            h = int(rng.integers(height // 20, height // 2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            kind = rng.random()
            if kind < 0.3:  # textured patch: what gives a random network its strong responses
                patch = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                image.paste(Image.fromarray(patch), (x, y))
            elif kind < 0.55:
                draw.ellipse((x, y, x + w, y + h), fill=color)
            else:
                draw.rectangle((x, y, x + w, y + h), fill=color)
        for _ in range(int(rng.integers(1, 4))):  # phone-like: dark body, light screen
            h = int(rng.integers(height // 10, height // 3))
            w = max(4, h // 2)
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            draw.rounded_rectangle((x, y, x + w, y + h), radius=max(1, w // 8), fill=(20, 20, 24))
            pad = max(1, w // 12)
            screen = tuple(int(c) for c in rng.integers(120, 256, 3))
            draw.rectangle((x + pad, y + 3 * pad, x + w - pad, y + h - 3 * pad), fill=screen)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=90)
        scenes.append(out.getvalue())
    return scenes


def time_models(
    models: dict[str, OnnxModel], batch: np.ndarray, *, runs: int, warmup: int = 2
) -> dict[str, float]:
    """Median milliseconds per `run(batch)` of each model; runs interleaved across models so
    that a busy moment on the machine weighs on every model alike."""
    for model in models.values():
        for _ in range(warmup):
            model.run(batch)
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(max(1, runs)):
        for name, model in models.items():
            started = time.perf_counter()
            model.run(batch)
            samples[name].append((time.perf_counter() - started) * 1000.0)
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def compare_outputs(
    reference: list[tuple[np.ndarray, np.ndarray]],
    candidate: list[tuple[np.ndarray, np.ndarray]],
    score_threshold: float,
    iou_threshold: float,
) -> dict[str, Any]:
    """Largest |difference| of scores and boxes (input pixels), and detections that differ.

    `max_box_diff_px_detected` is over the anchors either model scores at or above the
    threshold (None when there are none). Detections are all classes after class-aware NMS
    at `iou_threshold`; one differs when the other model has no detection of its class with
    IoU >= 0.5 (greedy, highest score first), counted on both sides.
    """
    max_score = max_box = 0.0
    max_box_detected: float | None = None
    counted = {"reference": 0, "candidate": 0, "differ": 0}
    for (ref_scores, ref_boxes), (cand_scores, cand_boxes) in zip(
        reference, candidate, strict=True
    ):
        max_score = max(max_score, float(np.abs(ref_scores - cand_scores).max()))
        box_diff = np.abs(ref_boxes - cand_boxes).max(axis=-1)
        max_box = max(max_box, float(box_diff.max()))
        passed = (ref_scores.max(axis=-1) >= score_threshold) | (
            cand_scores.max(axis=-1) >= score_threshold
        )
        if passed.any():
            max_box_detected = max(max_box_detected or 0.0, float(box_diff[passed].max()))
        for ref_image, cand_image in zip(
            _detections(ref_scores, ref_boxes, score_threshold, iou_threshold),
            _detections(cand_scores, cand_boxes, score_threshold, iou_threshold),
            strict=True,
        ):
            counted["reference"] += len(ref_image[0])
            counted["candidate"] += len(cand_image[0])
            counted["differ"] += _unmatched(ref_image, cand_image) + _unmatched(
                cand_image, ref_image
            )
    return {
        "max_score_diff": round(max_score, 6),
        "max_box_diff_px": round(max_box, 4),
        "max_box_diff_px_detected": None
        if max_box_detected is None
        else round(max_box_detected, 4),
        "detections": {
            "fp32": counted["reference"],
            "this": counted["candidate"],
            "differ": counted["differ"],
        },
    }


_Dets = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes [K, 4], scores [K], classes [K]


def _detections(
    scores: np.ndarray, boxes: np.ndarray, threshold: float, iou_threshold: float
) -> list[_Dets]:
    """Per image of a batch: all-class detections at or above `threshold` after NMS."""
    found = []
    for image_scores, image_boxes in zip(scores, boxes, strict=True):
        anchor, cls = np.nonzero(image_scores >= threshold)
        cand_boxes = image_boxes[anchor].astype(np.float32)
        cand_scores = image_scores[anchor, cls].astype(np.float32)
        keep = class_aware_nms(cand_boxes, cand_scores, cls, iou_threshold)
        found.append((cand_boxes[keep], cand_scores[keep], cls[keep]))
    return found


def _unmatched(these: _Dets, others: _Dets) -> int:
    """How many of `these` have no same-class box with IoU >= MATCH_IOU among `others`."""
    boxes, _scores, classes = these
    other_boxes, _other_scores, other_classes = others
    used = np.zeros(len(other_boxes), dtype=bool)
    missing = 0
    for box, cls in zip(boxes, classes, strict=True):  # already highest score first
        candidates = np.nonzero((other_classes == cls) & ~used)[0]
        if candidates.size:
            ious = _iou(box, other_boxes[candidates])
            best = int(np.argmax(ious))
            if ious[best] >= MATCH_IOU:
                used[candidates[best]] = True
                continue
        missing += 1
    return missing


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    inter_w = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
    inter_h = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0)
    inter = inter_w * inter_h
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    union = area + areas - inter
    result: np.ndarray = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return result


class _FrameReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds letterboxed uint8 frames to the float model, one [1, 3, H, W] float32 at a time."""

    def __init__(self, input_name: str, frames: list[np.ndarray]) -> None:
        self._input_name = input_name
        self._frames = frames
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._frames):
            return None
        frame = self._frames[self._next]
        self._next += 1
        return {self._input_name: frame[None].astype(np.float32)}

    def __len__(self) -> int:
        return len(self._frames)

    def rewind(self) -> None:
        self._next = 0


def _letterboxed(data: bytes, input_size_px: tuple[int, int]) -> np.ndarray:
    image, width, height = decode_for_model(
        data, input_size_px=input_size_px, max_pixels=_MAX_PIXELS
    )
    return letterbox(image, original_size_px=(width, height), input_size_px=input_size_px).tensor


def _check_io(source: onnx.ModelProto, written: onnx.ModelProto, target: Path) -> None:
    """The written graph keeps the source's input and output names, types and ranks."""

    def signature(model: onnx.ModelProto) -> list[tuple[str, int, int]]:
        initializers = {init.name for init in model.graph.initializer}
        values = [v for v in model.graph.input if v.name not in initializers]
        values += list(model.graph.output)
        return [
            (v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim))
            for v in values
        ]

    if signature(source) != signature(written):
        raise ModelContractError(
            f"{target} would change the model's inputs/outputs: "
            f"{signature(source)} -> {signature(written)}"
        )


def _set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)


def _save_atomically(model: onnx.ModelProto, target: Path) -> None:
    write_atomically(target, model.SerializeToString())


@contextmanager
def _as_contract_error(message: str) -> Iterator[None]:
    try:
        yield
    except DetectorError:
        raise
    except Exception as exc:  # onnx/onnxruntime raise their own untyped errors
        raise ModelContractError(f"{message}: {exc}") from exc


@contextmanager
def _quiet_quantization() -> Iterator[None]:
    """onnxruntime.quantization logs advice on the root logger; keep it off our stderr."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
