"""The asynchronous detection path: decode off the loop, batch on the model, post-process.

Endpoints call `DetectionPipeline.detect`; it never blocks the event loop and never calls
the model directly (the MicroBatcher does).
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace
from opentelemetry.trace import Tracer
from PIL import Image

from app.errors import DetectorError
from app.inference.batcher import MicroBatcher, Priority
from app.inference.detector import Detector, PreparedImage
from app.inference.types import DetectOptions, ImageResult
from app.telemetry.tracing import now_ns, record_finished_span


class DetectionPipeline:
    """Runs many requests' images through one Detector and one MicroBatcher."""

    def __init__(
        self,
        detector: Detector,
        batcher: MicroBatcher,
        *,
        decode_threads: int = 2,
        tracer: Tracer | None = None,
    ) -> None:
        self.detector = detector
        self.batcher = batcher
        self._tracer = tracer or trace.NoOpTracer()
        self._decode_pool = ThreadPoolExecutor(
            max_workers=decode_threads, thread_name_prefix="decode"
        )

    async def detect(
        self, images: list[bytes], options: DetectOptions, *, deadline_s: float
    ) -> list[ImageResult]:
        """Detect phones in each image; results are in input order.

        Any image's error (bad bytes, queue full, deadline) fails the whole call with that
        DetectorError, and the other images' frames are dropped.
        """
        started = time.monotonic()
        # Shed before decoding: a request that cannot be queued should cost nothing.
        self.batcher.check_capacity()
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._one(data, options, started + deadline_s))
                    for data in images
                ]
        except* DetectorError as errors:
            raise _first(errors) from None
        return [task.result() for task in tasks]

    async def detect_frame(
        self,
        image: Image.Image,
        options: DetectOptions,
        *,
        deadline_s: float,
        priority: Priority = Priority.BACKGROUND,
    ) -> ImageResult:
        """Detect phones in one already decoded frame (a camera source's), by default at
        background priority: it yields to requests and its refusals are not counted as shed
        requests. Raises the batcher's DetectorErrors (queue full, deadline, shutting down).
        """
        started = time.perf_counter()
        deadline_at = time.monotonic() + deadline_s
        loop = asyncio.get_running_loop()
        with self._tracer.start_as_current_span("preprocess"):
            prepared = await loop.run_in_executor(
                self._decode_pool, self.detector.prepare_image, image
            )
        return await self._infer(prepared, options, deadline_at, started, priority)

    async def _one(self, data: bytes, options: DetectOptions, deadline_at: float) -> ImageResult:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        with self._tracer.start_as_current_span("decode_preprocess"):
            prepared = await loop.run_in_executor(self._decode_pool, self.detector.prepare, data)
        return await self._infer(prepared, options, deadline_at, started, Priority.INTERACTIVE)

    async def _infer(
        self,
        prepared: PreparedImage,
        options: DetectOptions,
        deadline_at: float,
        started: float,
        priority: Priority,
    ) -> ImageResult:
        remaining_s = max(0.0, deadline_at - time.monotonic())
        submitted_ns = now_ns()
        output = await self.batcher.submit(
            prepared.letterboxed.tensor, deadline_s=remaining_s, priority=priority
        )
        record_finished_span(
            self._tracer, "queue_wait", start_ns=submitted_ns, duration_s=output.queue_s
        )
        record_finished_span(
            self._tracer,
            "inference",
            start_ns=submitted_ns + int(output.queue_s * 1e9),
            duration_s=output.inference_s,
            links=[output.batch_span] if output.batch_span else [],
        )
        prepared.timings_ms["queue"] = round(output.queue_s * 1000.0, 3)
        prepared.timings_ms["inference"] = round(output.inference_s * 1000.0, 3)
        with self._tracer.start_as_current_span("postprocess"):
            result = self.detector.finish(prepared, output.scores, output.boxes, options)
        result.timings_ms["total"] = round((time.perf_counter() - started) * 1000.0, 3)
        return result

    def close(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)


def _first(group: BaseExceptionGroup[DetectorError]) -> DetectorError:
    error = group.exceptions[0]
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
