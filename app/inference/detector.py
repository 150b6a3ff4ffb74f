"""The detection pipeline for one image, split into the steps the service runs apart.

`prepare` (decode + letterbox) and `finish` (post-process) run on worker threads; the
model step in between is the batcher's, or `detect_batch` runs all three in order.
"""

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from app.inference.model import OnnxModel
from app.inference.postprocess import select_detections
from app.inference.preprocess import Letterboxed, decode_for_model, letterbox
from app.inference.types import DetectOptions, ImageResult


@dataclass(slots=True)
class PreparedImage:
    """A letterboxed frame waiting for the model, with its stage timings so far."""

    letterboxed: Letterboxed
    timings_ms: dict[str, float] = field(default_factory=dict)


class Detector:
    """Turns image bytes into phone detections with one `OnnxModel`."""

    def __init__(self, model: OnnxModel, *, max_image_pixels: int) -> None:
        self.model = model
        self.max_image_pixels = max_image_pixels

    def prepare(self, data: bytes) -> PreparedImage:
        """Decode and letterbox; raises the app's image errors for bad bytes."""
        started = time.perf_counter()
        image, width, height = decode_for_model(
            data, input_size_px=self.model.info.input_size_px, max_pixels=self.max_image_pixels
        )
        decoded = time.perf_counter()
        boxed = letterbox(
            image, original_size_px=(width, height), input_size_px=self.model.info.input_size_px
        )
        done = time.perf_counter()
        return PreparedImage(
            letterboxed=boxed,
            timings_ms={"decode": _ms(decoded - started), "preprocess": _ms(done - decoded)},
        )

    def prepare_image(self, image: Image.Image) -> PreparedImage:
        """Letterbox an already decoded frame (e.g. a video frame); boxes map to its pixels."""
        started = time.perf_counter()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        converted = time.perf_counter()
        boxed = letterbox(
            rgb, original_size_px=rgb.size, input_size_px=self.model.info.input_size_px
        )
        done = time.perf_counter()
        return PreparedImage(
            letterboxed=boxed,
            timings_ms={"decode": _ms(converted - started), "preprocess": _ms(done - converted)},
        )

    def finish(
        self,
        prepared: PreparedImage,
        scores: np.ndarray,
        boxes: np.ndarray,
        options: DetectOptions,
    ) -> ImageResult:
        """Post-process one image's outputs ([N, C] scores, [N, 4] boxes) into a result."""
        started = time.perf_counter()
        boxed = prepared.letterboxed
        detections = select_detections(
            scores,
            boxes,
            phone_class_ids=self.model.info.phone_class_ids,
            scale=boxed.scale,
            original_size_px=(boxed.width_px, boxed.height_px),
            options=options,
        )
        timings = dict(prepared.timings_ms)
        timings["postprocess"] = _ms(time.perf_counter() - started)
        return ImageResult(
            width=boxed.width_px, height=boxed.height_px, detections=detections, timings_ms=timings
        )

    def detect_batch(self, images: list[bytes], options: DetectOptions) -> list[ImageResult]:
        """Run the whole pipeline synchronously on a few images (the CLI's path)."""
        prepared = [self.prepare(data) for data in images]
        started = time.perf_counter()
        scores, boxes = self.model.run(np.stack([p.letterboxed.tensor for p in prepared]))
        inference_ms = _ms(time.perf_counter() - started) / len(prepared)
        results = []
        for i, item in enumerate(prepared):
            item.timings_ms["inference"] = inference_ms
            result = self.finish(item, scores[i], boxes[i], options)
            result.timings_ms["total"] = round(sum(result.timings_ms.values()), 3)
            results.append(result)
        return results


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
