"""DetectionPipeline decodes a request's images only when they are close to the model: waiting
requests stay compressed, yet count in the queue bound, the queue_depth metric and the
deadline, and leave at once when cancelled."""

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from PIL import Image

from app.errors import DeadlineExceededError, QueueFullError, UnsupportedFormatError
from app.inference.batcher import MicroBatcher
from app.inference.detector import Detector, PreparedImage
from app.inference.model import OnnxModel
from app.inference.pipeline import DetectionPipeline
from app.inference.types import DetectOptions, ImageResult
from app.telemetry.metrics import DetectionMetrics
from tests.utils.images import encode
from tests.utils.prom_text import metric_value

pytestmark = pytest.mark.anyio

OPTIONS = DetectOptions(score_threshold=0.5, iou_threshold=0.5, max_detections=10)
LONG_S = 10.0


class HeldModel:
    """run(batch) like OnnxModel, with no detections, taking `delay_s` per batch; while held,
    batches wait inside `run`. `ran` lists each frame's grey level, which tells the test
    images apart; `sizes` each batch's size."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self._open = threading.Event()
        self._open.set()
        self.delay_s = delay_s
        self.entered = 0
        self.sizes: list[int] = []
        self.ran: list[int] = []

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.entered += 1
        self.sizes.append(batch.shape[0])
        self._open.wait(LONG_S)
        time.sleep(self.delay_s)
        self.ran.extend(int(frame[0, 100, 100]) for frame in batch)
        size = batch.shape[0]
        return np.zeros((size, 1, 80), np.float32), np.zeros((size, 1, 4), np.float32)


class CountingDetector(Detector):
    """Counts frames decoded, and the most ever alive between decode and post-process."""

    def __init__(self, model: OnnxModel) -> None:
        super().__init__(model, max_image_pixels=50_000_000)
        self._lock = threading.Lock()  # prepare runs on the decode threads
        self.decoded = 0
        self.alive = 0
        self.most_alive = 0

    def prepare(self, data: bytes) -> PreparedImage:
        prepared = super().prepare(data)
        with self._lock:
            self.decoded += 1
            self.alive += 1
            self.most_alive = max(self.most_alive, self.alive)
        return prepared

    def finish(
        self, prepared: PreparedImage, scores: np.ndarray, boxes: np.ndarray, options: DetectOptions
    ) -> ImageResult:
        with self._lock:
            self.alive -= 1
        return super().finish(prepared, scores, boxes, options)


def _grey(level: int) -> bytes:
    return encode(Image.new("RGB", (320, 240), (level, level, level)), "PNG")


def _level(i: int) -> int:
    return 20 + 10 * i


@contextlib.asynccontextmanager
async def _pipeline(
    red_model: OnnxModel,
    model: HeldModel,
    *,
    max_batch_size: int,
    decode_threads: int = 1,
    queue_size: int = 64,
) -> AsyncIterator[tuple[DetectionPipeline, CountingDetector, DetectionMetrics]]:
    metrics = DetectionMetrics()
    batcher = MicroBatcher(
        model.run,
        max_batch_size=max_batch_size,
        max_wait_ms=0.0,
        queue_size=queue_size,
        metrics=metrics,
    )
    batcher.start()
    detector = CountingDetector(red_model)
    pipeline = DetectionPipeline(detector, batcher, decode_threads=decode_threads)
    try:
        yield pipeline, detector, metrics
    finally:
        model.release()
        await batcher.stop(drain_timeout_s=2)
        pipeline.close()


def _detect(
    pipeline: DetectionPipeline, *levels: int, deadline_s: float = LONG_S
) -> "asyncio.Task[list[ImageResult]]":
    images = [_grey(level) for level in levels]
    return asyncio.create_task(pipeline.detect(images, OPTIONS, deadline_s=deadline_s))


async def until(predicate: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


async def _until_in_line(pipeline: DetectionPipeline, model: HeldModel, requests: int) -> None:
    """Until `requests` single-image requests have reached the model or its queue."""
    await until(lambda: pipeline.batcher.queue_depth + model.entered == requests)


def _gauge(metrics: DetectionMetrics, name: str, **labels: str) -> float:
    return metric_value(metrics.exposition().decode(), name, default=0.0, **labels)


async def _settle() -> None:
    """Long enough for any decode that was going to start to finish."""
    await asyncio.sleep(0.2)


async def test_waiting_requests_stay_compressed_beyond_the_decode_slots(
    red_model: OnnxModel,
) -> None:
    model = HeldModel()
    async with _pipeline(red_model, model, max_batch_size=2, decode_threads=1) as (
        pipeline,
        detector,
        metrics,
    ):
        slots = pipeline.decode_slot_count
        model.hold()
        requests = [_detect(pipeline, _level(i)) for i in range(24)]
        await until(lambda: model.entered == 1)
        await _settle()
        decoded_while_held = detector.decoded
        waiting = 24 - model.sizes[0]  # every request not in the model
        depth_while_held = pipeline.batcher.queue_depth
        model.release()
        results = await asyncio.gather(*requests)

    assert slots == 2 * 2 + 1  # a batch running, a batch queued, one per decode thread
    assert decoded_while_held == slots, "requests waiting for the model were decoded early"
    assert depth_while_held == waiting
    assert detector.most_alive <= slots
    assert detector.decoded == 24
    assert [len(r) for r in results] == [1] * 24
    assert pipeline.batcher.queue_depth == 0
    assert _gauge(metrics, "phone_detection_queue_depth") == 0


async def test_images_waiting_for_decode_count_in_queue_depth_and_are_shed_at_queue_size(
    red_model: OnnxModel,
) -> None:
    model = HeldModel()
    async with _pipeline(red_model, model, max_batch_size=1, queue_size=8) as (
        pipeline,
        detector,
        metrics,
    ):
        model.hold()
        requests = [_detect(pipeline, _level(0))]
        await until(lambda: model.entered == 1)
        requests += [_detect(pipeline, _level(i)) for i in range(1, 9)]
        await until(lambda: pipeline.batcher.queue_depth == 8)
        await _settle()
        gauge_when_full = _gauge(metrics, "phone_detection_queue_depth")
        decoded_when_full = detector.decoded
        with pytest.raises(QueueFullError):
            await pipeline.detect([_grey(250)], OPTIONS, deadline_s=LONG_S)
        model.release()
        results = await asyncio.gather(*requests)

    assert gauge_when_full == 8
    assert decoded_when_full == pipeline.decode_slot_count == 3
    assert detector.decoded == 9, "the shed request was decoded"
    assert len(results) == 9
    assert _gauge(metrics, "phone_detection_frames_rejected_total", reason="queue_full") == 1
    assert _gauge(metrics, "phone_detection_queue_depth") == 0


async def test_cancelled_waiting_request_frees_its_place_at_once_and_is_never_decoded(
    red_model: OnnxModel,
) -> None:
    model = HeldModel()
    async with _pipeline(red_model, model, max_batch_size=1) as (pipeline, detector, metrics):
        model.hold()
        requests = []
        for i in range(6):  # one at a time, so their places in line are known
            requests.append(_detect(pipeline, _level(i)))
            await _until_in_line(pipeline, model, i + 1)
        await _settle()  # 0 runs, 1 and 2 are decoded, 3, 4 and 5 wait for a slot
        leaving = requests.pop(4)
        leaving.cancel()
        await asyncio.gather(leaving, return_exceptions=True)
        depth_after_cancel = pipeline.batcher.queue_depth
        gauge_after_cancel = _gauge(metrics, "phone_detection_queue_depth")
        model.release()
        await asyncio.gather(*requests)

    assert (depth_after_cancel, gauge_after_cancel) == (4, 4)
    assert model.ran == [_level(i) for i in (0, 1, 2, 3, 5)]  # first come, first served
    assert detector.decoded == 5
    assert _gauge(metrics, "phone_detection_queue_depth") == 0


async def test_deadline_covers_the_wait_for_a_decode_slot(red_model: OnnxModel) -> None:
    model = HeldModel()
    async with _pipeline(red_model, model, max_batch_size=1) as (pipeline, detector, metrics):
        model.hold()
        ahead = [_detect(pipeline, _level(i)) for i in range(3)]  # hold every slot
        await until(lambda: model.entered == 1)
        await _settle()
        with pytest.raises(DeadlineExceededError):
            await pipeline.detect([_grey(250)], OPTIONS, deadline_s=0.2)
        depth_after_deadline = pipeline.batcher.queue_depth
        model.release()
        await asyncio.gather(*ahead)

    assert detector.decoded == 3, "the expired request was decoded"
    assert depth_after_deadline == 2
    assert _gauge(metrics, "phone_detection_frames_rejected_total", reason="deadline") == 1
    assert _gauge(metrics, "phone_detection_queue_depth") == 0


async def test_request_with_more_images_than_slots_is_answered_in_order(
    red_model: OnnxModel,
) -> None:
    model = HeldModel()
    async with _pipeline(red_model, model, max_batch_size=1) as (pipeline, detector, metrics):
        model.hold()
        levels = [_level(i) for i in range(8)]
        request = _detect(pipeline, *levels)
        await until(lambda: model.entered == 1)
        await _settle()
        decoded_while_held = detector.decoded
        model.release()
        results = await asyncio.wait_for(request, 10)

    assert decoded_while_held == pipeline.decode_slot_count == 3
    assert len(results) == 8
    assert model.ran == levels
    assert detector.most_alive <= 3
    assert _gauge(metrics, "phone_detection_queue_depth") == 0


async def test_bad_image_releases_the_places_of_its_request_s_other_images(
    red_model: OnnxModel,
) -> None:
    model = HeldModel()
    async with _pipeline(red_model, model, max_batch_size=1) as (pipeline, _, metrics):
        model.hold()
        running = _detect(pipeline, _level(0))
        await until(lambda: model.entered == 1)
        images = [b"not an image", *(_grey(_level(i)) for i in range(1, 6))]
        with pytest.raises(UnsupportedFormatError):
            await pipeline.detect(images, OPTIONS, deadline_s=LONG_S)
        depth_after_failure = pipeline.batcher.queue_depth
        model.release()
        await running

    assert depth_after_failure == 0
    assert _gauge(metrics, "phone_detection_queue_depth") == 0


async def test_camera_frame_does_not_wait_for_a_decode_slot(red_model: OnnxModel) -> None:
    # The model is slower than a decode, as real ones are, so a decoded request is always
    # queued when a batch forms; camera frames then get only what requests leave.
    model = HeldModel(delay_s=0.05)
    async with _pipeline(red_model, model, max_batch_size=1) as (pipeline, detector, _metrics):
        model.hold()
        requests = [_detect(pipeline, _level(i)) for i in range(6)]
        await until(lambda: model.entered == 1)
        await _settle()
        assert 6 - detector.decoded == 3  # waiting for a decode slot
        frame = Image.new("RGB", (320, 240), (250, 250, 250))
        camera = asyncio.create_task(pipeline.detect_frame(frame, OPTIONS, deadline_s=LONG_S))
        await until(lambda: pipeline.batcher.background_depth == 1)
        model.release()
        await asyncio.gather(camera, *requests)

    # behind every waiting request, as before: requests keep their priority
    assert model.ran == [*(_level(i) for i in range(6)), 250]


async def test_queue_wait_metric_includes_the_wait_for_a_decode_slot(
    red_model: OnnxModel,
) -> None:
    """The queue-wait histogram is what callers experience: an image that waited for a decode
    slot waited in the queue, even if its frame then ran at once."""
    model = HeldModel()
    async with _pipeline(red_model, model, max_batch_size=1, decode_threads=1) as (
        pipeline,
        _,
        metrics,
    ):
        slots = pipeline.decode_slot_count
        model.hold()
        requests = [_detect(pipeline, _level(i)) for i in range(slots + 1)]
        await until(lambda: model.entered == 1)
        await asyncio.sleep(0.3)  # the last request waits this long for a slot
        model.release()
        await asyncio.gather(*requests)
        text = metrics.exposition().decode()

    frames = metric_value(text, "phone_detection_queue_wait_duration_seconds_count")
    total_s = metric_value(text, "phone_detection_queue_wait_duration_seconds_sum")
    assert frames == slots + 1
    # The first frame ran at once; the next `slots - 1` waited ~0.3 s behind the held model;
    # the last waited ~0.3 s for a slot, then behind no one: it must count ~0.3 s, not ~0.
    assert total_s >= 0.3 * slots - 0.05
