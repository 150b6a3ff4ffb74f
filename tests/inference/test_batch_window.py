"""The batch window: the adaptive rule's arithmetic, and the batcher following it."""

import asyncio
import time

import numpy as np
import pytest

from app.inference.batch_window import (
    AdaptiveWindow,
    BatchCost,
    FixedWindow,
    fit_batch_cost,
    make_window,
)
from app.inference.batcher import MicroBatcher
from app.telemetry.metrics import DetectionMetrics
from tests.utils.prom_text import metric_value

MS = 1e-3
GPU_LIKE = [(1, 5 * MS), (8, 8 * MS)]  # 5 ms for one frame, 8 ms for eight


def test_batch_cost_fits_a_line_through_batch_sizes() -> None:
    cost = fit_batch_cost([(1, 81 * MS), (2, 150 * MS)])

    assert cost is not None
    assert cost.fixed_s == pytest.approx(12 * MS)
    assert cost.per_frame_s == pytest.approx(69 * MS)


def test_batch_cost_needs_two_sizes_and_never_goes_negative() -> None:
    assert fit_batch_cost([(1, 0.08)]) is None
    # Noise can make a bigger batch look cheaper; that must not become a negative cost.
    cost = fit_batch_cost([(1, 0.50), (2, 0.45)])
    assert cost is not None
    assert cost.per_frame_s == 0.0
    assert cost.fixed_s > 0.0


@pytest.mark.parametrize(
    ("cost", "queued", "expected_ms"),
    [
        (BatchCost(fixed_s=10 * MS, per_frame_s=1 * MS), 1, 4.5),  # (10 - 1) / 2
        (BatchCost(fixed_s=10 * MS, per_frame_s=1 * MS), 9, 0.1),  # (10 - 9) / 10
        (BatchCost(fixed_s=10 * MS, per_frame_s=1 * MS), 10, 0.0),  # waiting never pays
        (BatchCost(fixed_s=0.0, per_frame_s=530 * MS), 1, 0.0),  # this CPU, model S
    ],
)
def test_break_even_wait(cost: BatchCost, queued: int, expected_ms: float) -> None:
    assert cost.break_even_wait_s(queued) == pytest.approx(expected_ms * MS)


def _adaptive(
    batch_times: list[tuple[int, float]], gap_s: float, *, cap_ms: float = 50
) -> AdaptiveWindow:
    window = AdaptiveWindow(cap_ms * MS)
    for size, seconds in batch_times:
        window.observe_batch(size, seconds)
    for i in range(40):
        window.observe_arrival(100.0 + i * gap_s)
    return window


def test_adaptive_window_stays_shut_where_batching_gains_nothing() -> None:
    # Measured here: DAMO-YOLO-N 81 ms at batch 1, 150 ms at batch 2; frames 1 ms apart.
    window = _adaptive([(1, 81 * MS), (2, 150 * MS)], gap_s=1 * MS)

    assert window.window_s(1) == 0.0
    assert window.remaining_s(queued=1, oldest_at=5.0, newest_at=5.0, held_since=5.0, now=5.0) <= 0


def test_adaptive_window_opens_when_batching_pays_and_frames_come_fast() -> None:
    # An accelerator-like cost: 5 ms for one frame, 8 ms for eight; frames 0.5 ms apart.
    busy = _adaptive(GPU_LIKE, gap_s=0.5 * MS)

    # It waits about as long as the next frame takes (plus 1 ms for jitter), not the cap.
    assert busy.window_s(1) == pytest.approx(1.5 * MS)
    assert busy.remaining_s(
        queued=3, oldest_at=10.0, newest_at=10.001, held_since=10.001, now=10.001
    ) == pytest.approx(busy.window_s(3))


def test_adaptive_window_respects_its_cap_from_when_the_model_became_free() -> None:
    slow_frames = [(1, 40 * MS), (8, 41 * MS)]  # nearly all of a batch's cost is fixed
    assert _adaptive(slow_frames, gap_s=5 * MS, cap_ms=3).window_s(1) == 0.0
    capped = _adaptive(slow_frames, gap_s=5 * MS, cap_ms=10)
    assert capped.window_s(1) == pytest.approx(6 * MS)

    # A hold that could not last until the next frame is due is not started...
    assert (
        capped.remaining_s(queued=1, oldest_at=10.0, newest_at=10.008, held_since=10.0, now=10.008)
        <= 0
    )
    # ...but time spent queued behind a busy model does not count against the cap.
    assert capped.remaining_s(
        queued=1, oldest_at=9.0, newest_at=10.008, held_since=10.005, now=10.008
    ) == pytest.approx(6 * MS)


def test_adaptive_window_reads_bursts_that_a_mean_gap_would_hide() -> None:
    # Two closed-loop clients answered together come back together: a frame 40 ms after the
    # last pair, its partner 1 ms later, and so on.
    window = AdaptiveWindow(20 * MS)
    for size, seconds in [(1, 30 * MS), (8, 37 * MS)]:
        window.observe_batch(size, seconds)
    at = 100.0
    for i in range(41):
        at += 40 * MS if i % 2 == 0 else 1 * MS
        window.observe_arrival(at)

    # The newest frame came after a long gap, and after every long gap the partner came
    # within 1 ms; the mean gap (20.5 ms, past the ~14 ms break-even) would never wait.
    assert window.window_s(1) == pytest.approx(2 * MS)
    # If the partner is late after all, only long gaps remain possible: stop waiting.
    assert (
        window.remaining_s(queued=1, oldest_at=at, newest_at=at, held_since=at, now=at + 3 * MS)
        <= 0.0
    )
    # The partner itself ends a burst: after a short gap the next frame is 40 ms away.
    window.observe_arrival(at + 1 * MS)
    assert window.window_s(1) == 0.0


def test_adaptive_window_shuts_when_traffic_thins() -> None:
    assert _adaptive(GPU_LIKE, gap_s=20 * MS).window_s(1) == 0.0
    # Nothing known yet: no hold.
    assert AdaptiveWindow(50 * MS).window_s(1) == 0.0


def test_fixed_window_always_waits_its_length_from_the_oldest_frame() -> None:
    window = make_window("fixed", 10)

    assert isinstance(window, FixedWindow)
    assert window.window_s(1) == pytest.approx(10 * MS)
    assert window.remaining_s(
        queued=2, oldest_at=1.0, newest_at=1.008, held_since=1.008, now=1.008
    ) == pytest.approx(2 * MS)


class FixedCostModel:
    """Costs the same for any batch size, like an accelerator with room to spare."""

    def __init__(self, seconds: float, per_frame_s: float = 0.0) -> None:
        self.seconds = seconds
        self.per_frame_s = per_frame_s
        self.sizes: list[int] = []

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.seconds + self.per_frame_s * batch.shape[0])
        self.sizes.append(batch.shape[0])
        return np.zeros((batch.shape[0], 1, 1), np.float32), np.zeros(
            (batch.shape[0], 1, 4), np.float32
        )


def _adaptive_batcher(model: FixedCostModel, metrics: DetectionMetrics) -> MicroBatcher:
    batcher = MicroBatcher(
        model.run,
        max_batch_size=8,
        max_wait_ms=40,
        queue_size=64,
        metrics=metrics,
        window_mode="adaptive",
    )
    # What the service's warm-up does: one run at batch 1 and one at a bigger size.
    batcher.window.observe_batch(1, model.seconds + model.per_frame_s)
    batcher.window.observe_batch(4, model.seconds + 4 * model.per_frame_s)
    return batcher


async def _stream(batcher: MicroBatcher, frames: int, gap_s: float) -> None:
    tasks = []
    for _ in range(frames):
        tasks.append(asyncio.create_task(batcher.submit(np.zeros(3, np.float32), deadline_s=5)))
        await asyncio.sleep(gap_s)
    await asyncio.gather(*tasks)


@pytest.mark.anyio
async def test_batcher_holds_frames_for_company_only_when_it_pays() -> None:
    fixed_metrics, linear_metrics = DetectionMetrics(), DetectionMetrics()
    fixed_cost = FixedCostModel(0.04)
    # 30 ms per frame: well above what thread hops and sleep overshoot add to a batch on a
    # loaded machine, which the fit would otherwise read as a per-batch cost.
    linear_cost = FixedCostModel(0.0, per_frame_s=0.03)
    fixed_batcher = _adaptive_batcher(fixed_cost, fixed_metrics)
    linear_batcher = _adaptive_batcher(linear_cost, linear_metrics)
    fixed_batcher.start()
    linear_batcher.start()

    await asyncio.gather(_stream(fixed_batcher, 40, 0.003), _stream(linear_batcher, 40, 0.003))

    # 40 ms per batch whatever its size: waiting for frames ~3 ms apart pays.
    assert fixed_batcher.window.window_s(1) > 0.002
    window_gauge = metric_value(
        fixed_metrics.exposition().decode(), "phone_detection_batch_window_seconds"
    )
    assert window_gauge == pytest.approx(fixed_batcher.window.window_s(1))
    # 30 ms per frame, nothing per batch: never hold a frame back.
    assert linear_batcher.window.window_s(1) == 0.0
    assert (
        metric_value(linear_metrics.exposition().decode(), "phone_detection_batch_window_seconds")
        == 0.0
    )
    await fixed_batcher.stop(drain_timeout_s=1)
    await linear_batcher.stop(drain_timeout_s=1)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["adaptive", "fixed"])
async def test_a_lone_caller_waits_only_under_the_fixed_window(mode: str) -> None:
    """Closed loop with one client (K = 1): the adaptive window sees the gap between frames
    is longer than anything batching could save and stays shut; the fixed one waits every time."""
    model = FixedCostModel(0.02)
    batcher = MicroBatcher(
        model.run,
        max_batch_size=8,
        max_wait_ms=30,
        queue_size=8,
        metrics=DetectionMetrics(),
        window_mode="adaptive" if mode == "adaptive" else "fixed",
    )
    batcher.window.observe_batch(1, 0.02)
    batcher.window.observe_batch(4, 0.02)
    batcher.start()

    waits = []
    for _ in range(8):
        output = await batcher.submit(np.zeros(3, np.float32), deadline_s=5)
        waits.append(output.queue_s)

    if mode == "adaptive":
        assert max(waits[1:]) < 0.01
    else:
        assert min(waits) > 0.025
    await batcher.stop(drain_timeout_s=1)
