"""The machine's ceiling for one model and one JPEG, measured in-process without a server.

Model time is the onnxruntime session alone on already prepared frames, at each batch size;
decode + letterbox and post-processing are timed per image on one thread. The ceiling is
1 / (best model time per image + decode/letterbox time) images/s.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.inference.detector import Detector
from app.inference.model import OnnxModel
from app.inference.types import DetectOptions

BATCH_SIZES = (1, 2, 4, 8)


@dataclass
class Ceiling:
    """Per-image milliseconds for each part, and what they add up to."""

    model_ms_by_batch: dict[int, float]
    best_batch: int
    model_ms_per_image: float  # at best_batch
    prepare_ms: float  # decode + letterbox, one thread
    postprocess_ms: float
    single_image_latency_ms: float  # prepare + model at batch 1 + postprocess
    images_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median_ms(step: Callable[[], object], *, budget_s: float, min_runs: int = 3) -> float:
    step()  # warm: arenas, kernels, caches
    times: list[float] = []
    stop_at = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < stop_at:
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0


def measure_ceiling(
    model_path: Path, jpeg: bytes, *, intra_op_threads: int, budget_s: float = 3.0
) -> Ceiling:
    """Time the model at each batch size and the per-image CPU steps around it."""
    model = OnnxModel(model_path, intra_op_threads=intra_op_threads)
    detector = Detector(model, max_image_pixels=100_000_000)
    prepare_ms = _median_ms(lambda: detector.prepare(jpeg), budget_s=budget_s)
    prepared = detector.prepare(jpeg)
    frame = prepared.letterboxed.tensor
    by_batch: dict[int, float] = {}
    for size in BATCH_SIZES:
        batch = np.stack([frame] * size)
        by_batch[size] = _median_ms(lambda b=batch: model.run(b), budget_s=budget_s) / size
    scores, boxes = model.run(frame[None])
    options = DetectOptions()
    postprocess_ms = _median_ms(
        lambda: detector.finish(prepared, scores[0], boxes[0], options), budget_s=budget_s / 3
    )
    best = min(by_batch, key=lambda size: by_batch[size])
    model_ms = by_batch[best]
    return Ceiling(
        model_ms_by_batch=by_batch,
        best_batch=best,
        model_ms_per_image=model_ms,
        prepare_ms=prepare_ms,
        postprocess_ms=postprocess_ms,
        single_image_latency_ms=prepare_ms + by_batch[1] + postprocess_ms,
        images_per_s=1000.0 / (model_ms + prepare_ms),
    )
