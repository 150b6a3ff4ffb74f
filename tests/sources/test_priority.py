"""Camera frames wait behind requests: background priority in the MicroBatcher, and the
readers' reconnect backoff."""

import asyncio
import threading

import numpy as np
import pytest

from app.errors import DeadlineExceededError, QueueFullError
from app.inference.batcher import MicroBatcher, Priority
from app.sources.reader import Backoff
from app.telemetry.metrics import DetectionMetrics

pytestmark = pytest.mark.anyio


class GatedModel:
    """Records each batch's first values; blocks until `gate` is set."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = threading.Event()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.gate.wait(5)
        self.batches.append([float(frame[0]) for frame in batch])
        return batch[:, :1].reshape(-1, 1, 1), np.zeros((batch.shape[0], 1, 4), np.float32)


def _frame(value: float) -> np.ndarray:
    return np.full(3, value, np.float32)


def _batcher(model: GatedModel, **options: int) -> MicroBatcher:
    return MicroBatcher(
        model.run,
        max_batch_size=options.get("max_batch_size", 4),
        max_wait_ms=0.0,
        queue_size=options.get("queue_size", 2),
        metrics=DetectionMetrics(),
        background_slots=options.get("background_slots", 1),
        background_queue_size=options.get("background_queue_size", 8),
    )


async def test_requests_go_before_camera_frames_which_get_few_slots() -> None:
    model = GatedModel()
    batcher = _batcher(model, background_slots=1)
    batcher.start()
    blocker = asyncio.create_task(batcher.submit(_frame(-1), deadline_s=5))
    await asyncio.sleep(0.05)  # the blocker's batch is running, the model is gated
    background = [
        asyncio.create_task(
            batcher.submit(_frame(100 + i), deadline_s=5, priority=Priority.BACKGROUND)
        )
        for i in range(3)
    ]
    await asyncio.sleep(0)
    interactive = [asyncio.create_task(batcher.submit(_frame(i), deadline_s=5)) for i in range(2)]
    await asyncio.sleep(0.05)

    model.gate.set()
    await asyncio.gather(blocker, *interactive, *background)
    await batcher.stop(drain_timeout_s=1)

    assert model.batches == [[-1.0], [0.0, 1.0, 100.0], [101.0], [102.0]]


async def test_camera_frames_never_fill_the_request_queue() -> None:
    model = GatedModel()
    batcher = _batcher(model, queue_size=2, background_queue_size=2)
    batcher.start()
    blocker = asyncio.create_task(batcher.submit(_frame(-1), deadline_s=5))
    await asyncio.sleep(0.05)
    background = [
        asyncio.create_task(
            batcher.submit(_frame(100 + i), deadline_s=5, priority=Priority.BACKGROUND)
        )
        for i in range(2)
    ]
    await asyncio.sleep(0)

    with pytest.raises(QueueFullError):
        await batcher.submit(_frame(200), deadline_s=5, priority=Priority.BACKGROUND)
    batcher.check_capacity()  # requests still have their whole queue
    assert batcher.queue_depth == 0
    assert batcher.background_depth == 2

    model.gate.set()
    await asyncio.gather(blocker, *background)
    await batcher.stop(drain_timeout_s=1)


async def test_a_camera_frame_past_its_deadline_is_dropped_before_the_model() -> None:
    model = GatedModel()
    batcher = _batcher(model)
    batcher.start()
    blocker = asyncio.create_task(batcher.submit(_frame(-1), deadline_s=5))
    await asyncio.sleep(0.05)
    late = asyncio.create_task(
        batcher.submit(_frame(100), deadline_s=0.05, priority=Priority.BACKGROUND)
    )
    await asyncio.sleep(0.2)

    model.gate.set()
    await blocker
    with pytest.raises(DeadlineExceededError):
        await late
    await batcher.stop(drain_timeout_s=1)

    assert model.batches == [[-1.0]]


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets() -> None:
    draws = iter([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5])
    backoff = Backoff(initial_s=1.0, max_s=4.0, rng=lambda: next(draws))

    delays = [backoff.next_delay_s() for _ in range(6)]
    backoff.reset()

    assert delays == [0.5, 2.0, 2.0, 4.0, 2.0, 4.0]
    assert backoff.next_delay_s() == 0.75
