"""Plain result types shared by the inference modules and their callers."""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in original-image pixels; x2 >= x1, y2 >= y1."""

    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class Detection:
    """One phone found in an image. `label` is always the product label (`phone`)."""

    label: str
    class_id: int
    score: float
    box: Box


@dataclass(frozen=True, slots=True)
class DetectOptions:
    """Per-request post-processing options."""

    score_threshold: float = 0.35
    iou_threshold: float = 0.45
    max_detections: int = 100


@dataclass(slots=True)
class ImageResult:
    """Detections for one image plus where its time went (milliseconds per stage)."""

    width: int
    height: int
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.detections)
