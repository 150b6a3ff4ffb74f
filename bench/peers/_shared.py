"""What every peer does with an image: our Detector's prepare, batched model run, finish."""

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from app.inference.detector import Detector, PreparedImage
from app.inference.model import OnnxModel
from app.inference.types import DetectOptions

BATCH_WAIT_S = 0.005  # a short window, as a user tuning for latency would pick


def port() -> int:
    return int(os.environ.get("BENCH_PORT", "8765"))


def max_batch_size() -> int:
    return int(os.environ.get("BENCH_MAX_BATCH_SIZE", "8"))


def load_detector() -> Detector:
    """Our model wrapper and pipeline steps, on the file and threads the bench chose."""
    model = OnnxModel(
        Path(os.environ["BENCH_MODEL_PATH"]),
        intra_op_threads=int(os.environ.get("BENCH_INTRA_OP_THREADS", "2")),
    )
    return Detector(model, max_image_pixels=40_000_000)


def detect_prepared(detector: Detector, prepared: list[PreparedImage]) -> list[dict[str, Any]]:
    """One model run over the batch, then each image's detections as our JSON shape."""
    batch = np.stack([item.letterboxed.tensor for item in prepared])
    scores, boxes = detector.model.run(batch)
    options = DetectOptions()
    return [
        asdict(detector.finish(item, scores[i], boxes[i], options))
        for i, item in enumerate(prepared)
    ]
