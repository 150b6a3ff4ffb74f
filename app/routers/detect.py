"""POST /v1/detect (multipart) and /v1/detect/base64 (JSON): find phones in images."""

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from app.errors import (
    ClientDisconnectedError,
    DeadlineExceededError,
    DetectorError,
    ImageTooLargeError,
    InvalidBase64Error,
    NoImagesError,
    QueueFullError,
    ShuttingDownError,
    TooManyFilesError,
)
from app.inference.render import render_detections
from app.inference.types import DetectOptions, ImageResult
from app.routers.convert import image_detections, model_ref
from app.routers.deps import RuntimeDep
from app.runtime import Runtime
from app.schemas import Base64DetectRequest, DetectResponse, ErrorBody
from app.telemetry.logging import get_logger

router = APIRouter(prefix="/v1", tags=["detect"])
logger = get_logger(__name__)
_T = TypeVar("_T")

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Undecodable image or malformed request"),
        (413, "Upload, image or file count over a limit"),
        (415, "Not a supported image format"),
        (422, "Option out of range or wrong type"),
        (503, "Queue full or shutting down; see Retry-After"),
        (504, "Not answered within the deadline"),
    )
}

ScoreThreshold = Annotated[float | None, Query(ge=0.0, le=1.0, description="Minimum score")]
IouThreshold = Annotated[float | None, Query(ge=0.0, le=1.0, description="NMS IoU threshold")]
MaxDetections = Annotated[int | None, Query(ge=1, le=1000, description="Detections per image")]
Source = Annotated[str | None, Query(max_length=100, description="Camera or client id")]


@router.post(
    "/detect", response_model=DetectResponse, response_model_exclude_none=True, responses=_ERRORS
)
async def detect_multipart(
    request: Request,
    runtime: RuntimeDep,
    file: Annotated[list[UploadFile], File(description="One or more image files")],
    score_threshold: ScoreThreshold = None,
    iou_threshold: IouThreshold = None,
    max_detections: MaxDetections = None,
    source: Source = None,
    form_score_threshold: Annotated[
        float | None, Form(alias="score_threshold", ge=0.0, le=1.0)
    ] = None,
    form_iou_threshold: Annotated[float | None, Form(alias="iou_threshold", ge=0.0, le=1.0)] = None,
    form_max_detections: Annotated[int | None, Form(alias="max_detections", ge=1, le=1000)] = None,
    form_source: Annotated[str | None, Form(alias="source", max_length=100)] = None,
) -> DetectResponse:
    """Detect phones in uploaded images (multipart/form-data, one `file` part per image).

    Options may be sent as query parameters or form fields; results come in upload order.
    Example: `curl -F file=@photo.jpg localhost:8000/v1/detect`
    """
    async with _observed(runtime, "multipart") as observe:
        settings = runtime.settings
        if len(file) > settings.max_files_per_request:
            raise TooManyFilesError(
                f"{len(file)} files in one request; the limit is {settings.max_files_per_request}"
            )
        images = [await _read_upload(upload, settings.max_upload_bytes) for upload in file]
        options = _options(
            runtime,
            _first(form_score_threshold, score_threshold),
            _first(form_iou_threshold, iou_threshold),
            _first(form_max_detections, max_detections),
        )
        results = await _detect(request, runtime, images, options)
        observe(results, _first(form_source, source))
        return _response(runtime, results, ids=None)


@router.post(
    "/detect/base64",
    response_model=DetectResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
)
async def detect_base64(
    request: Request, runtime: RuntimeDep, body: Base64DetectRequest
) -> DetectResponse:
    """Detect phones in base64-encoded images sent as JSON; each result echoes its `id`."""
    async with _observed(runtime, "base64") as observe:
        settings = runtime.settings
        if len(body.images) > settings.max_files_per_request:
            raise TooManyFilesError(
                f"{len(body.images)} images in one request; "
                f"the limit is {settings.max_files_per_request}"
            )
        images = [_decode_base64(item.data, settings.max_upload_bytes) for item in body.images]
        options = _options(runtime, body.score_threshold, body.iou_threshold, body.max_detections)
        results = await _detect(request, runtime, images, options)
        observe(results, body.source)
        return _response(runtime, results, ids=[item.id for item in body.images])


@router.post(
    "/detect/render",
    response_class=Response,
    responses={
        200: {
            "content": {"image/jpeg": {}, "image/png": {}},
            "description": "The image with boxes, labels and scores drawn",
        },
        **_ERRORS,
    },
)
async def detect_render(
    request: Request,
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="One image file")],
    score_threshold: ScoreThreshold = None,
    iou_threshold: IouThreshold = None,
    max_detections: MaxDetections = None,
    source: Source = None,
    image_format: Annotated[
        Literal["jpeg", "png"], Query(alias="format", description="Output image format")
    ] = "jpeg",
) -> Response:
    """Detect phones in one image and return it annotated (JPEG or PNG).

    The phone count and synthetic flag are also in the `X-Phone-Count` and
    `X-Model-Synthetic` headers.
    Example: `curl -F file=@photo.jpg localhost:8000/v1/detect/render -o annotated.jpg`
    """
    async with _observed(runtime, "render") as observe:
        data = await _read_upload(file, runtime.settings.max_upload_bytes)
        options = _options(runtime, score_threshold, iou_threshold, max_detections)
        (result,) = await _detect(request, runtime, [data], options)
        observe([result], source)
        pillow_format = "PNG" if image_format == "png" else "JPEG"
        rendered = await asyncio.to_thread(
            render_detections, data, result.detections, image_format=pillow_format
        )
        info = runtime.require_pipeline().detector.model.info
        return Response(
            rendered,
            media_type=f"image/{image_format}",
            headers={
                "X-Phone-Count": str(result.count),
                "X-Model-Synthetic": str(info.synthetic).lower(),
            },
        )


async def _detect(
    request: Request, runtime: Runtime, images: list[bytes], options: DetectOptions
) -> list[ImageResult]:
    """Runs the pipeline, dropping the work if the client disconnects first."""
    pipeline = runtime.require_pipeline()
    if not images:
        raise NoImagesError("no image in the request")
    runtime.metrics.record_images(len(images))
    work = asyncio.create_task(
        pipeline.detect(images, options, deadline_s=runtime.settings.deadline_ms / 1000.0)
    )
    gone = asyncio.create_task(_client_gone(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()  # frames still queued are dropped before inference
        with contextlib.suppress(asyncio.CancelledError, DetectorError):
            await work
        runtime.metrics.record_rejected("client_disconnected", len(images))
        raise ClientDisconnectedError("client disconnected before the answer was ready")
    return work.result()


async def _client_gone(request: Request) -> None:
    # The body is fully read by now, so the next ASGI message is the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@contextlib.asynccontextmanager
async def _observed(runtime: Runtime, method: str) -> AsyncIterator["_Observer"]:
    """Admits the request, then counts and logs its outcome and latency, whatever happens."""
    started = time.perf_counter()
    observer = _Observer(runtime, method)
    try:
        runtime.admit()
    except DetectorError as exc:
        if isinstance(exc, ShuttingDownError):
            runtime.metrics.record_rejected("shutting_down")
        observer.finish(_status_of(exc), seconds=None, code=exc.code)
        raise
    try:
        yield observer
    except DetectorError as exc:
        status = _status_of(exc)
        processed = status in ("error", "timeout")  # shed requests never ran: no latency
        elapsed = time.perf_counter() - started
        observer.finish(status, seconds=elapsed if processed else None, code=exc.code)
        raise
    except Exception:
        observer.finish("error", seconds=time.perf_counter() - started, code="internal_error")
        raise
    else:
        observer.finish("success", seconds=time.perf_counter() - started, code=None)
    finally:
        runtime.release()


def record_shed(runtime: Runtime, method: str, error: DetectorError) -> None:
    """Count and log a request refused before its route ran, as the route would have."""
    _Observer(runtime, method).finish(_status_of(error), seconds=None, code=error.code)


class _Observer:
    """Collects what a request did, then records it in metrics and one log line."""

    def __init__(self, runtime: Runtime, method: str) -> None:
        self._runtime = runtime
        self._metrics = runtime.metrics
        self._method = method
        self._results: list[ImageResult] = []
        self._source: str | None = None

    def __call__(self, results: list[ImageResult], source: str | None) -> None:
        self._results, self._source = results, source
        for result in results:
            self._runtime.record_result(result, source)

    def finish(self, status: str, *, seconds: float | None, code: str | None) -> None:
        self._metrics.record_request(method=self._method, status=status, seconds=seconds)
        if code is not None:
            self._metrics.record_error(code)
        logger.info(
            "detect request",
            extra={
                "method": self._method,
                "status": status,
                "code": code,
                "source": self._source,
                "images": len(self._results),
                "phones": sum(r.count for r in self._results),
                "latency_ms": None if seconds is None else round(seconds * 1000.0, 2),
                "timings_ms": [r.timings_ms for r in self._results],
            },
        )


def _status_of(exc: DetectorError) -> str:
    if isinstance(exc, ClientDisconnectedError):
        return "cancelled"
    if isinstance(exc, QueueFullError | ShuttingDownError):
        return "rejected"
    if isinstance(exc, DeadlineExceededError):
        return "timeout"
    return "error"


async def _read_upload(upload: UploadFile, limit_bytes: int) -> bytes:
    if upload.size is not None and upload.size > limit_bytes:
        raise ImageTooLargeError(
            f"{upload.filename or 'upload'} is {upload.size} bytes; the limit is {limit_bytes}"
        )
    data = await upload.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise ImageTooLargeError(f"{upload.filename or 'upload'} is over {limit_bytes} bytes")
    return data


def _decode_base64(text: str, limit_bytes: int) -> bytes:
    if len(text) > (limit_bytes * 4) // 3 + 4:
        raise ImageTooLargeError(f"a base64 image is over {limit_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64Error(f"image data is not valid base64: {exc}") from exc


def _options(
    runtime: Runtime, score: float | None, iou: float | None, max_detections: int | None
) -> DetectOptions:
    settings = runtime.settings
    return DetectOptions(
        score_threshold=settings.score_threshold if score is None else score,
        iou_threshold=settings.iou_threshold if iou is None else iou,
        max_detections=settings.max_detections if max_detections is None else max_detections,
    )


def _first(*values: _T | None) -> _T | None:
    """The first value that is not None (form field before query parameter), or None."""
    return next((value for value in values if value is not None), None)


def _response(
    runtime: Runtime, results: list[ImageResult], *, ids: list[str | None] | None
) -> DetectResponse:
    info = runtime.require_pipeline().detector.model.info
    return DetectResponse(
        model=model_ref(info),
        results=[
            image_detections(result, image_id=ids[i] if ids else None)
            for i, result in enumerate(results)
        ],
    )
