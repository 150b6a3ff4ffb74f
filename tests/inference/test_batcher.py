"""MicroBatcher behaviour with a fake model (same run(batch) interface as OnnxModel)."""

import asyncio
import threading
import time

import numpy as np
import pytest

from app.errors import QueueFullError, ShuttingDownError
from app.inference.batcher import MicroBatcher
from app.telemetry.metrics import DetectionMetrics

pytestmark = pytest.mark.anyio


class FakeModel:
    """Echoes each frame's first value; can block until released."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.gate.wait(5)
        self.batches.append([float(frame[0]) for frame in batch])
        return batch[:, :1].reshape(-1, 1, 1), np.zeros((batch.shape[0], 1, 4), np.float32)


def _batcher(model: FakeModel, **overrides: float) -> MicroBatcher:
    options: dict[str, float] = {"max_batch_size": 4, "max_wait_ms": 0.0, "queue_size": 16}
    options.update(overrides)
    return MicroBatcher(
        model.run,
        max_batch_size=int(options["max_batch_size"]),
        max_wait_ms=options["max_wait_ms"],
        queue_size=int(options["queue_size"]),
        metrics=DetectionMetrics(),
    )


def _frame(value: float) -> np.ndarray:
    return np.full(3, value, np.float32)


async def test_full_batch_dispatches_without_waiting_for_the_window() -> None:
    model = FakeModel()
    batcher = _batcher(model, max_wait_ms=2000)
    batcher.start()
    started = time.monotonic()

    outputs = await asyncio.gather(*(batcher.submit(_frame(i), deadline_s=5) for i in range(4)))

    assert time.monotonic() - started < 1.0
    assert model.batches == [[0.0, 1.0, 2.0, 3.0]]
    assert [float(o.scores[0, 0]) for o in outputs] == [0.0, 1.0, 2.0, 3.0]
    await batcher.stop(drain_timeout_s=1)


async def test_batch_window_collects_frames_that_arrive_late() -> None:
    model = FakeModel()
    batcher = _batcher(model, max_wait_ms=300)
    batcher.start()

    first = asyncio.create_task(batcher.submit(_frame(1), deadline_s=5))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit(_frame(2), deadline_s=5))
    await asyncio.gather(first, second)

    assert model.batches == [[1.0, 2.0]]
    await batcher.stop(drain_timeout_s=1)


async def test_frames_queued_while_model_busy_form_the_next_batch() -> None:
    model = FakeModel()
    batcher = _batcher(model)
    batcher.start()
    model.gate.clear()
    busy = asyncio.create_task(batcher.submit(_frame(0), deadline_s=5))
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(batcher.submit(_frame(i), deadline_s=5)) for i in (1, 2, 3)]
    await asyncio.sleep(0.05)
    model.gate.set()

    await asyncio.gather(busy, *waiting)

    assert model.batches == [[0.0], [1.0, 2.0, 3.0]]
    await batcher.stop(drain_timeout_s=1)


async def test_cancelled_callers_frames_are_dropped_before_inference() -> None:
    model = FakeModel()
    batcher = _batcher(model)
    batcher.start()
    model.gate.clear()
    busy = asyncio.create_task(batcher.submit(_frame(0), deadline_s=5))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(batcher.submit(_frame(9), deadline_s=5))
    kept = asyncio.create_task(batcher.submit(_frame(1), deadline_s=5))
    await asyncio.sleep(0.01)
    gone.cancel()
    model.gate.set()

    await asyncio.gather(busy, kept)

    assert model.batches == [[0.0], [1.0]]
    await batcher.stop(drain_timeout_s=1)


async def test_queue_full_raises_at_once() -> None:
    model = FakeModel()
    batcher = _batcher(model, queue_size=2, max_batch_size=1)
    batcher.start()
    model.gate.clear()
    running = asyncio.create_task(batcher.submit(_frame(0), deadline_s=5))
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(batcher.submit(_frame(i), deadline_s=5)) for i in (1, 2)]
    await asyncio.sleep(0.01)

    with pytest.raises(QueueFullError) as caught:
        await batcher.submit(_frame(3), deadline_s=5)

    assert caught.value.retry_after_s == 1.0
    model.gate.set()
    await asyncio.gather(running, *queued)
    await batcher.stop(drain_timeout_s=1)


async def test_stop_answers_queued_work_then_refuses_new() -> None:
    model = FakeModel()
    batcher = _batcher(model, max_batch_size=1)
    batcher.start()
    model.gate.clear()
    pending = [asyncio.create_task(batcher.submit(_frame(i), deadline_s=5)) for i in range(3)]
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(batcher.stop(drain_timeout_s=5))
    await asyncio.sleep(0.05)

    with pytest.raises(ShuttingDownError):
        await batcher.submit(_frame(7), deadline_s=5)
    model.gate.set()
    outputs = await asyncio.gather(*pending)
    await stopping

    assert len(outputs) == 3
    assert model.batches == [[0.0], [1.0], [2.0]]


def test_bad_arguments_fail_fast() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(
            FakeModel().run, max_batch_size=0, max_wait_ms=0, queue_size=1,
            metrics=DetectionMetrics(),
        )  # fmt: skip
