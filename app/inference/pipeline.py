"""The asynchronous detection path: decode off the loop, batch on the model, post-process.

Endpoints call `DetectionPipeline.detect`; it never blocks the event loop and never calls
the model directly (the MicroBatcher does). A request's images are decoded only when they
are about to be needed (`decode_slots`): until then they wait as compressed bytes, counted
in the batcher's queue, so memory does not grow with the number of waiting requests.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace
from opentelemetry.trace import Tracer
from PIL import Image

from app.errors import DeadlineExceededError, DetectorError, ShuttingDownError
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
        # Decoded frames enough to keep the model busy, and no more: the batch it runs, the
        # batch queued behind it, one image on each decode thread. A 640x640 frame is 1.2 MB
        # against a few hundred kB of JPEG, so 64 waiting requests cost ~80 MB less this way.
        # asyncio's semaphore serves waiters first come, first served (since 3.11) and a
        # waiter cancelled as it is granted passes the slot on; Bounded refuses over-release.
        self.decode_slot_count = 2 * batcher.max_batch_size + decode_threads
        self.decode_slots = asyncio.BoundedSemaphore(self.decode_slot_count)

    async def detect(
        self, images: list[bytes], options: DetectOptions, *, deadline_s: float
    ) -> list[ImageResult]:
        """Detect phones in each image; results are in input order.

        Any image's error (bad bytes, queue full, deadline) fails the whole call with that
        DetectorError, and the other images' frames are dropped. The deadline includes the
        wait for a decode slot.
        """
        started = time.monotonic()
        # Shed before decoding: a request that cannot be queued should cost nothing. From
        # here its images count in the queue, also while they wait for a decode slot.
        self.batcher.reserve(len(images))
        unsubmitted = _Unsubmitted(self.batcher, len(images))
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._one(data, options, started + deadline_s, unsubmitted))
                    for data in images
                ]
        except* DetectorError as errors:
            raise _first(errors) from None
        finally:
            # Images that never reached the batcher (cancelled, failed, or whose task never
            # started) leave the queue count; their callers count why they gave up.
            unsubmitted.release_rest()
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

    async def _one(
        self, data: bytes, options: DetectOptions, deadline_at: float, unsubmitted: "_Unsubmitted"
    ) -> ImageResult:
        started = time.perf_counter()
        waiting_ns = now_ns()
        try:
            async with asyncio.timeout(deadline_at - time.monotonic()):
                await self.decode_slots.acquire()
        except TimeoutError:
            unsubmitted.release_one(reason="deadline")
            raise DeadlineExceededError(
                "not answered within the deadline (still waiting to be decoded)"
            ) from None
        slot_wait_s = time.perf_counter() - started
        if not self.batcher.running:
            # Stopped while this image waited: refuse it as the batcher would, undecoded.
            self.decode_slots.release()
            unsubmitted.release_one(reason="shutting_down")
            raise ShuttingDownError("service stopped before this image was decoded")
        record_finished_span(
            self._tracer, "decode_wait", start_ns=waiting_ns, duration_s=slot_wait_s
        )
        try:
            loop = asyncio.get_running_loop()
            with self._tracer.start_as_current_span("decode_preprocess"):
                prepared = await loop.run_in_executor(
                    self._decode_pool, self.detector.prepare, data
                )
            # No await between these two: the reservation passes to the batcher's queue.
            unsubmitted.hand_over_one()
            return await self._infer(
                prepared,
                options,
                deadline_at,
                started,
                Priority.INTERACTIVE,
                reserved=True,
                waited_s=slot_wait_s,
            )
        finally:
            self.decode_slots.release()

    async def _infer(
        self,
        prepared: PreparedImage,
        options: DetectOptions,
        deadline_at: float,
        started: float,
        priority: Priority,
        *,
        reserved: bool = False,
        waited_s: float = 0.0,
    ) -> ImageResult:
        remaining_s = max(0.0, deadline_at - time.monotonic())
        submitted_ns = now_ns()
        output = await self.batcher.submit(
            prepared.letterboxed.tensor,
            deadline_s=remaining_s,
            priority=priority,
            reserved=reserved,
            waited_before_s=waited_s,
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
        # Waiting for a decode slot is queueing too, from the client's point of view.
        prepared.timings_ms["queue"] = round((waited_s + output.queue_s) * 1000.0, 3)
        prepared.timings_ms["inference"] = round(output.inference_s * 1000.0, 3)
        with self._tracer.start_as_current_span("postprocess"):
            result = self.detector.finish(prepared, output.scores, output.boxes, options)
        result.timings_ms["total"] = round((time.perf_counter() - started) * 1000.0, 3)
        return result

    def close(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)


class _Unsubmitted:
    """A request's images reserved in the batcher's queue and not yet submitted to it; each
    is either handed over (submitted with `reserved=True`) or released, exactly once."""

    def __init__(self, batcher: MicroBatcher, frames: int) -> None:
        self._batcher = batcher
        self._left = frames

    def hand_over_one(self) -> None:
        self._left -= 1

    def release_one(self, *, reason: str) -> None:
        self._left -= 1
        self._batcher.release_reserved(1, reason=reason)

    def release_rest(self) -> None:
        self._batcher.release_reserved(self._left)
        self._left = 0


def _first(group: BaseExceptionGroup[DetectorError]) -> DetectorError:
    error = group.exceptions[0]
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
