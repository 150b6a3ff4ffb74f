"""Inference results -> API response shapes (shared by the HTTP and WebSocket routes)."""

from app.inference.model import ModelInfo
from app.inference.types import ImageResult
from app.schemas import BoxOut, DetectionOut, ImageDetections, ModelRef, Timings


def model_ref(info: ModelInfo) -> ModelRef:
    return ModelRef(name=info.name, variant=info.variant, synthetic=info.synthetic)


def image_detections(result: ImageResult, *, image_id: str | None = None) -> ImageDetections:
    return ImageDetections(
        id=image_id,
        width=result.width,
        height=result.height,
        count=result.count,
        detections=[
            DetectionOut(
                label=d.label,
                class_id=d.class_id,
                score=d.score,
                box=BoxOut(x1=d.box.x1, y1=d.box.y1, x2=d.box.x2, y2=d.box.y2),
            )
            for d in result.detections
        ],
        timings_ms=Timings(**result.timings_ms),
    )
