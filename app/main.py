"""create_app(settings) -> FastAPI: routers, error handlers, and the lifespan that loads the
model, warms it up, starts and drains the micro-batcher, and starts and stops the camera
sources."""

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from wsgiref.simple_server import WSGIServer

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, start_http_server

import app
from app.config import Settings, get_settings
from app.errors import DetectorError
from app.inference.allocator import map_large_buffers
from app.inference.batcher import MicroBatcher
from app.inference.detector import Detector
from app.inference.model import OnnxModel
from app.inference.pipeline import DetectionPipeline
from app.limits import RequestBodyLimit
from app.presence import PresenceTracker
from app.routers import detect, health, models, sources, stream, web
from app.routers.auth import ApiKeyRequired
from app.routers.errors import add_error_handlers, count_refused_body
from app.runtime import Runtime
from app.shedding import ShedWhenFull
from app.sources import SourceManager
from app.telemetry.logging import get_logger
from app.telemetry.setup import Telemetry, build_telemetry

logger = get_logger(__name__)


def _tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (128, 128, 128)).save(out, format="JPEG")
    return out.getvalue()


_WARM_UP_JPEG = _tiny_jpeg()


def create_app(
    settings: Settings | None = None,
    *,
    model: OnnxModel | None = None,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """Build the service. `model` skips resolution (tests); otherwise it loads in the
    background after start-up, and /readyz says 503 until it is warm."""
    settings = settings or get_settings()
    telemetry = telemetry or build_telemetry(settings)
    runtime = Runtime(
        settings=settings,
        metrics=telemetry.metrics,
        tracer=telemetry.tracer,
        api_keys=settings.resolved_api_keys(),
        presence=PresenceTracker(
            min_hits=settings.presence_min_hits,
            window=settings.presence_window,
            clear_after_s=settings.presence_clear_after_s,
        ),
    )
    # Built here, so a bad sources file fails start-up instead of the first camera.
    camera_sources = SourceManager(runtime)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader: asyncio.Task[None] | None = None
        _map_large_buffers(settings.malloc_mmap_threshold_kb)
        metrics_server = _start_metrics_server(runtime)
        if model is not None:
            await _bring_up(runtime, model)
        else:
            loader = asyncio.create_task(_load_and_bring_up(runtime))
        # Readers connect at once; their frames go to the model once it is ready.
        await camera_sources.start()
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
            # Sources first: their frames must not compete with the requests being drained.
            await camera_sources.stop()
            await _shut_down(runtime)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            telemetry.shutdown()

    service = FastAPI(
        title="phone-detector",
        version=app.__version__,
        description="Finds mobile phones in images with DAMO-YOLO. Errors always have the "
        'shape `{"error": {"code": ..., "message": ...}}`.',
        lifespan=lifespan,
    )
    service.state.runtime = runtime
    service.state.sources = camera_sources
    service.include_router(detect.router, dependencies=[ApiKeyRequired])
    service.include_router(models.router, dependencies=[ApiKeyRequired])
    service.include_router(sources.router, dependencies=[ApiKeyRequired])
    service.include_router(stream.router)  # checks its key itself: browsers can't send headers
    service.include_router(web.router)  # the page is public; its API calls carry the key
    service.include_router(
        health.router, dependencies=[ApiKeyRequired] if settings.auth_health else []
    )
    _add_metrics_route(service, runtime)
    add_error_handlers(service, runtime)
    service.add_middleware(
        ShedWhenFull,
        runtime=runtime,
        on_shed=lambda method, error: detect.record_shed(runtime, method, error),
    )
    service.add_middleware(
        RequestBodyLimit,
        max_body_bytes=settings.max_request_bytes,
        on_refused=lambda path: count_refused_body(runtime, path),
    )
    if settings.cors_origins:
        service.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    FastAPIInstrumentor.instrument_app(
        service,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.metrics.provider,
        excluded_urls="metrics,healthz,readyz",
    )
    return service


def _map_large_buffers(threshold_kb: int) -> None:
    """Before the model loads: its per-run tensors are the large buffers that matter."""
    if threshold_kb == 0:
        return
    if map_large_buffers(threshold_kb * 1024):
        logger.info("buffers of %d KiB and more are unmapped when freed", threshold_kb)
    else:
        logger.info("malloc tuning unavailable here (not glibc); RSS may stay at its peak")


def _start_metrics_server(runtime: Runtime) -> WSGIServer | None:
    """Serve /metrics on its own port too, when PHONE_DET_METRICS_PORT asks for it."""
    port = runtime.settings.metrics_port
    if port is None:
        return None
    server, _ = start_http_server(
        port, addr=runtime.settings.host, registry=runtime.metrics.registry
    )
    return server


async def _load_and_bring_up(runtime: Runtime) -> None:
    from app.inference.resolve import resolve_model_path

    settings = runtime.settings
    try:
        path = await asyncio.to_thread(resolve_model_path, settings)
        model = await asyncio.to_thread(
            OnnxModel,
            path,
            intra_op_threads=settings.intra_op_threads,
            labels_path=settings.labels_path,
            phone_classes=settings.phone_classes,
        )
        await _bring_up(runtime, model)
    except DetectorError as exc:
        runtime.not_ready_reason = f"model failed to load: {exc.message}"
        runtime.metrics.record_model_unloaded()
        logger.error("model failed to load: %s", exc.message)


async def _bring_up(runtime: Runtime, model: OnnxModel) -> None:
    settings = runtime.settings
    runtime.not_ready_reason = "warming up"
    detector = Detector(model, max_image_pixels=settings.max_image_pixels)
    batch_times = await asyncio.to_thread(_warm_up, detector, settings.max_batch_size)
    batcher = MicroBatcher(
        model.run,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        queue_size=settings.queue_size,
        metrics=runtime.metrics,
        tracer=runtime.tracer,
        background_slots=settings.source_batch_slots,
        background_queue_size=max(1, settings.max_camera_sources),
        window_mode=settings.batch_window,
        admit_within_s=settings.deadline_ms / 1000.0,
    )
    for size, seconds in batch_times:
        batcher.observe_batch(size, seconds)
    batcher.start()
    runtime.pipeline = DetectionPipeline(detector, batcher, tracer=runtime.tracer)
    info = model.info
    runtime.metrics.record_model(
        loaded=True,
        name=info.name,
        variant=info.variant,
        synthetic=info.synthetic,
        provider=info.provider,
    )
    runtime.not_ready_reason = None
    logger.info(
        "serving %s (variant %s%s), input %sx%s, batch <= %d",
        info.name,
        info.variant,
        ", SYNTHETIC: detections are meaningless" if info.synthetic else "",
        *info.input_size_px,
        settings.max_batch_size,
    )


def _warm_up(detector: Detector, max_batch_size: int) -> list[tuple[int, float]]:
    """Run the model once per batch size it will see first; returns (size, seconds) of each
    second run, the adaptive batch window's first estimate of what batching saves."""
    # The first runs allocate arenas and pick kernels, and the first decode loads codecs;
    # pay that before reporting ready, not on the first caller.
    model = detector.model
    detector.prepare(_WARM_UP_JPEG)
    height, width = model.info.input_size_px
    sizes = [1]
    if model.info.dynamic_batch and max_batch_size > 1:
        sizes.append(min(max_batch_size, 4))
    timings = []
    for size in sizes:
        frames = np.zeros((size, 3, height, width), np.uint8)
        model.run(frames)
        started = time.perf_counter()
        model.run(frames)
        timings.append((size, time.perf_counter() - started))
    return timings


async def _shut_down(runtime: Runtime) -> None:
    runtime.begin_drain()
    await runtime.wait_drained(runtime.settings.drain_timeout_s)
    pipeline = runtime.pipeline
    if pipeline is not None:
        await pipeline.batcher.stop(drain_timeout_s=runtime.settings.drain_timeout_s)
        pipeline.close()
    runtime.metrics.record_model_unloaded()


def _add_metrics_route(service: FastAPI, runtime: Runtime) -> None:
    guard = [ApiKeyRequired] if runtime.settings.auth_metrics else []

    @service.get("/metrics", tags=["health"], response_class=Response, dependencies=guard)
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of the service's metrics."""
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
