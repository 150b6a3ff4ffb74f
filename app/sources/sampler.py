"""SourceSampler: takes a reader's newest frame at the source's fps, detects phones in it at
background priority, and feeds the results to metrics, presence events and the webhook."""

import asyncio
import contextlib
import time
from dataclasses import dataclass

from PIL import Image

from app.errors import DetectorError, ModelError
from app.inference.types import Box, Detection, DetectOptions, ImageResult
from app.runtime import Runtime
from app.sources.reader import DecodedFrame, SourceReader
from app.sources.spec import SourceSpec
from app.sources.webhook import WebhookNotifier
from app.telemetry.logging import get_logger

logger = get_logger(__name__)


@dataclass(slots=True)
class SamplerStats:
    """What GET /v1/sources reports about detection on a source."""

    frames_sampled: int = 0
    frames_skipped: int = 0
    phones: int | None = None  # in the last detected frame
    last_detection_at: float | None = None  # wall clock
    last_frame_age_s: float | None = None


class SourceSampler:
    """One task per source; at most one of its frames is with the model at any time, so a
    slow model makes a source skip ticks (counted) instead of queuing stale frames."""

    def __init__(
        self,
        spec: SourceSpec,
        reader: SourceReader,
        runtime: Runtime,
        notifier: WebhookNotifier,
    ) -> None:
        self.spec = spec
        self.stats = SamplerStats()
        self._reader = reader
        self._runtime = runtime
        self._notifier = notifier
        settings = runtime.settings
        self._options = DetectOptions(
            score_threshold=settings.score_threshold,
            iou_threshold=settings.iou_threshold,
            max_detections=settings.max_detections,
        )
        # A sampled frame that waited two ticks behind requests has been replaced by a newer
        # one; detecting it would report the past.
        self._deadline_s = min(settings.deadline_ms / 1000.0, max(1.0, 2.0 / spec.fps))
        self._task: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"sampler-{self.spec.id}"
        )

    async def stop(self) -> None:
        """Stop sampling; a frame being detected is abandoned."""
        for task in (self._task, self._in_flight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = 1.0 / self.spec.fps
        next_tick = loop.time()
        last_seq = 0
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            # After a long pause (no frames, event-loop stall) do not fire a burst of ticks.
            next_tick = max(next_tick + interval_s, loop.time())
            latest = self._reader.latest()
            if latest is None or latest.seq <= last_seq:
                continue  # nothing new since the last sample
            if self._in_flight is not None and not self._in_flight.done():
                self._skip("busy")
                continue
            if self._runtime.pipeline is None or not self._runtime.ready:
                continue
            last_seq = latest.seq
            self._in_flight = loop.create_task(self._detect(latest))

    def _skip(self, reason: str) -> None:
        self.stats.frames_skipped += 1
        self._runtime.metrics.record_source_skipped(source=self.spec.id, reason=reason)

    async def _detect(self, latest: DecodedFrame) -> None:
        try:
            await self._detect_one(latest)
        except Exception:  # one bad frame must not end the source, nor vanish unlogged
            logger.exception("source %s: detection failed", self.spec.id)

    async def _detect_one(self, latest: DecodedFrame) -> None:
        pipeline = self._runtime.pipeline
        if pipeline is None:
            return
        image, offset = await asyncio.to_thread(_to_image, latest, self.spec.roi)
        self.stats.frames_sampled += 1
        self._runtime.metrics.record_source_sampled(source=self.spec.id)
        try:
            result = await pipeline.detect_frame(image, self._options, deadline_s=self._deadline_s)
        except ModelError as exc:
            logger.warning("source %s: model failed on a frame: %s", self.spec.id, exc.message)
            return
        except DetectorError:
            self._skip("shed")  # queue full, deadline behind requests, or draining
            return
        if offset is not None:
            result = _to_whole_frame(result, offset, latest)
        age_s = time.monotonic() - latest.decoded_at
        self._runtime.metrics.record_source_frame_age(source=self.spec.id, seconds=age_s)
        self.stats.phones = result.count
        self.stats.last_detection_at = time.time()
        self.stats.last_frame_age_s = round(age_s, 3)
        event = self._runtime.record_result(result, self.spec.id)
        if event is not None and self.spec.webhook:
            self._notifier.send(
                self.spec.webhook,
                {"type": "presence", "source": event.source, "state": event.state,
                 "frame": event.frame, "phones": event.phones, "duration_s": event.duration_s,
                 "labels": self.spec.labels},
            )  # fmt: skip


def _to_image(
    latest: DecodedFrame, roi: tuple[float, float, float, float] | None
) -> tuple[Image.Image, tuple[int, int] | None]:
    """The frame as RGB pixels, cropped to `roi`; also the crop's top-left in the frame."""
    image: Image.Image = latest.frame.to_image()  # type: ignore[no-untyped-call]
    if roi is None:
        return image, None
    width, height = image.size
    left, top = round(roi[0] * width), round(roi[1] * height)
    right = max(left + 1, round(roi[2] * width))
    bottom = max(top + 1, round(roi[3] * height))
    return image.crop((left, top, right, bottom)), (left, top)


def _to_whole_frame(
    result: ImageResult, offset: tuple[int, int], latest: DecodedFrame
) -> ImageResult:
    dx, dy = offset
    moved = [
        Detection(
            label=d.label,
            class_id=d.class_id,
            score=d.score,
            box=Box(d.box.x1 + dx, d.box.y1 + dy, d.box.x2 + dx, d.box.y2 + dy),
        )
        for d in result.detections
    ]
    return ImageResult(
        width=latest.frame.width,
        height=latest.frame.height,
        detections=moved,
        timings_ms=result.timings_ms,
    )
