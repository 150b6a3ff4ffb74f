"""Request and response shapes of the HTTP API (pydantic); they make the OpenAPI schema."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(examples=["bad_image"])
    message: str = Field(examples=["cannot decode image: image file is truncated"])


class ErrorBody(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorDetail


class BoxOut(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class DetectionOut(BaseModel):
    label: str = Field(examples=["phone"])
    class_id: int = Field(examples=[67])
    score: float = Field(ge=0.0, le=1.0, examples=[0.91])
    box: BoxOut


class Timings(BaseModel):
    """Milliseconds spent in each stage for this image."""

    queue: float
    decode: float
    preprocess: float
    inference: float
    postprocess: float
    total: float


class ImageDetections(BaseModel):
    id: str | None = Field(None, description="The id sent with a base64 image")
    width: int
    height: int
    count: int
    detections: list[DetectionOut]
    timings_ms: Timings


class ModelRef(BaseModel):
    name: str = Field(examples=["damoyolo_tinynasL25_S_460"])
    variant: str = Field(examples=["S"])
    synthetic: bool = Field(description="True: seeded weights, detections are meaningless")


class DetectResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {
                        "name": "damoyolo_tinynasL25_S_460",
                        "variant": "S",
                        "synthetic": False,
                    },
                    "results": [
                        {
                            "width": 1280,
                            "height": 720,
                            "count": 1,
                            "detections": [
                                {
                                    "label": "phone",
                                    "class_id": 67,
                                    "score": 0.91,
                                    "box": {"x1": 400.0, "y1": 200.0, "x2": 560.0, "y2": 500.0},
                                }
                            ],
                            "timings_ms": {
                                "queue": 0.1,
                                "decode": 3.2,
                                "preprocess": 1.1,
                                "inference": 48.0,
                                "postprocess": 0.2,
                                "total": 53.0,
                            },
                        }
                    ],
                }
            ]
        }
    )

    model: ModelRef
    results: list[ImageDetections]


class Base64Image(BaseModel):
    id: str | None = Field(None, max_length=200, examples=["cam-3/frame-1812"])
    data: str = Field(
        description="The image file's bytes, base64-encoded", examples=["/9j/4AAQ..."]
    )


class Base64DetectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[Base64Image] = Field(min_length=1)
    score_threshold: float | None = Field(None, ge=0.0, le=1.0)
    iou_threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_detections: int | None = Field(None, ge=1, le=1000)
    source: str | None = Field(None, max_length=100, description="Camera or client id")


class BatcherSettings(BaseModel):
    max_batch_size: int
    batch_window: Literal["adaptive", "fixed"]
    max_wait_ms: float
    window_ms: float = Field(description="How long a lone frame would now wait for company")
    batch_fixed_ms: float | None = Field(
        None, description="Adaptive window's estimate of the cost paid once per batch"
    )
    batch_per_frame_ms: float | None = Field(
        None, description="Adaptive window's estimate of the cost per frame in a batch"
    )
    queue_size: int
    queue_capacity: int = Field(
        description="Frames admitted at once: queue_size, or fewer where the deadline allows"
        " fewer at the measured model time per frame"
    )
    model_ms_per_frame: float | None = Field(
        None, description="Recent model time per frame (average over batches)"
    )
    deadline_ms: float


class ModelDescription(BaseModel):
    name: str
    variant: str
    input_size: tuple[int, int] = Field(description="(height, width) in pixels")
    num_classes: int
    phone_classes: list[str]
    synthetic: bool
    sha256: str
    execution_provider: str
    dynamic_batch: bool = Field(description="False: a batch-1 export, run frame by frame")
    batcher: BatcherSettings


class ModelsResponse(BaseModel):
    models: list[ModelDescription]


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])


class ReadinessResponse(BaseModel):
    status: str = Field(examples=["ready"])
    reason: str | None = None
