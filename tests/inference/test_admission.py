"""Deadline-aware admission: a frame that would wait past the deadline is refused at once,
as if the queue were full, instead of being queued to time out."""

import asyncio

import pytest

from app.errors import QueueFullError
from app.inference.batcher import MicroBatcher
from app.telemetry.metrics import DetectionMetrics
from tests.inference.test_batcher import FakeModel, _frame

pytestmark = pytest.mark.anyio


def _batcher(model: FakeModel, *, admit_within_s: float | None) -> MicroBatcher:
    return MicroBatcher(
        model.run,
        max_batch_size=1,
        max_wait_ms=0.0,
        queue_size=16,
        metrics=DetectionMetrics(),
        admit_within_s=admit_within_s,
    )


async def _hold_one_in_the_model(batcher: MicroBatcher, model: FakeModel) -> asyncio.Task:
    model.gate.clear()
    running = asyncio.create_task(batcher.submit(_frame(0), deadline_s=30))
    while batcher.queue_depth or not batcher.expected_wait_s(0):
        await asyncio.sleep(0.005)
    return running


async def _admitted_until_refused(batcher: MicroBatcher) -> tuple[list[asyncio.Task], str]:
    queued: list[asyncio.Task] = []
    while True:
        try:
            batcher.check_capacity()
        except QueueFullError as exc:
            return queued, exc.message
        queued.append(asyncio.create_task(batcher.submit(_frame(len(queued) + 1), deadline_s=30)))
        await asyncio.sleep(0)


async def test_frames_past_the_deadline_are_refused_before_the_queue_is_full() -> None:
    model = FakeModel()
    batcher = _batcher(model, admit_within_s=1.0)
    batcher.observe_batch(2, 0.25)  # 0.125 s a frame
    batcher.start()
    running = await _hold_one_in_the_model(batcher, model)

    queued, message = await _admitted_until_refused(batcher)

    # admission allows 80 % of the deadline, 6.4 frames: 1 running + 5 waiting + 1 newcomer
    assert len(queued) == 5
    assert batcher.queue_depth == 5 < batcher.queue_size
    assert not batcher.has_room()
    assert "deadline" in message
    assert batcher.capacity == 6  # 0.8 s / 0.125 s, running or waiting
    model.gate.set()
    await asyncio.gather(running, *queued)
    assert batcher.has_room()
    await batcher.stop(drain_timeout_s=1)


async def test_the_estimate_follows_the_measured_model_time() -> None:
    model = FakeModel()
    batcher = _batcher(model, admit_within_s=1.0)
    batcher.observe_batch(1, 0.1)
    for _ in range(40):  # the model got 4.5 times slower
        batcher.observe_batch(1, 0.45)
    batcher.start()
    running = await _hold_one_in_the_model(batcher, model)

    queued, _ = await _admitted_until_refused(batcher)

    assert batcher.seconds_per_frame == pytest.approx(0.45, rel=0.01)
    assert len(queued) == 0  # 1 running + the newcomer = 0.9 s, past 80 % of the deadline
    model.gate.set()
    await running
    await batcher.stop(drain_timeout_s=1)


async def test_without_a_deadline_only_the_queue_size_bounds_admission() -> None:
    model = FakeModel()
    batcher = _batcher(model, admit_within_s=None)
    batcher.observe_batch(1, 0.5)
    batcher.start()
    running = await _hold_one_in_the_model(batcher, model)

    queued, message = await _admitted_until_refused(batcher)

    assert len(queued) == batcher.queue_size == batcher.capacity
    assert "deadline" not in message
    model.gate.set()
    await asyncio.gather(running, *queued)
    await batcher.stop(drain_timeout_s=1)


async def test_a_model_slower_than_the_deadline_still_takes_a_frame_when_idle() -> None:
    """Nothing ahead means nothing to shed for: the caller gets its 504, a config error shows."""
    model = FakeModel()
    batcher = _batcher(model, admit_within_s=0.1)
    batcher.observe_batch(1, 0.5)
    batcher.start()

    assert batcher.has_room()
    batcher.check_capacity()
    running = await _hold_one_in_the_model(batcher, model)
    assert not batcher.has_room()
    model.gate.set()
    await running
    await batcher.stop(drain_timeout_s=1)
