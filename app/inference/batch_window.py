"""How long a batch that is not full may wait for more frames: a fixed window, or one derived
from the arrival rate and what batching actually saves on this model and machine.

The adaptive rule. Fit batch time as t(b) = a + m·b (a: cost paid once per batch, m: cost per
frame) from the batches the service runs. With b frames queued and the model idle, holding the
batch for w until one more frame arrives delays each of the b frames by w + m, and saves the
newcomer a - w (it no longer runs alone after them). The summed latency drops only while

    w < w*(b) = (a - b·m) / (b + 1)

so the batch waits at most w*(b) after its newest frame, and only when the mean gap between
arrivals says the next frame is due within it. Where batching buys nothing (a ≈ 0: a CPU whose
cores a single frame already fills) w* is 0 and no frame is ever held; on an accelerator where
a batch of 8 costs little more than one, it opens to a few milliseconds under load and closes
again when traffic thins. `max_wait_ms` caps it from the oldest frame, as for the fixed window.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

WindowMode = Literal["adaptive", "fixed"]

_ALPHA = 0.2  # EWMA weight of the newest sample: adapts within ~10 arrivals or batches
_LONGEST_GAP_S = 1.0  # an idle minute must not take hundreds of arrivals to forget


class BatchWindow(Protocol):
    """Decides, while frames wait and the model is idle, how much longer to wait for more."""

    mode: WindowMode

    def observe_arrival(self, at: float) -> None: ...

    def observe_batch(self, size: int, seconds: float) -> None: ...

    def window_s(self, queued: int) -> float:
        """How long `queued` frames would now wait for one more (0: run at once)."""
        ...

    def remaining_s(self, queued: int, oldest_at: float, newest_at: float, now: float) -> float:
        """Seconds left to wait for another frame; <= 0 runs the batch now."""
        ...


class FixedWindow:
    """Waits up to `max_wait_s` after the oldest queued frame, whatever the load."""

    mode: WindowMode = "fixed"

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s

    def observe_arrival(self, at: float) -> None:
        pass

    def observe_batch(self, size: int, seconds: float) -> None:
        pass

    def window_s(self, queued: int) -> float:
        return self.max_wait_s

    def remaining_s(self, queued: int, oldest_at: float, newest_at: float, now: float) -> float:
        return oldest_at + self.max_wait_s - now


@dataclass(frozen=True, slots=True)
class BatchCost:
    """t(b) = fixed_s + per_frame_s · b, fitted from observed batches."""

    fixed_s: float
    per_frame_s: float

    def break_even_wait_s(self, queued: int) -> float:
        """w*(b): the longest wait for one more frame that still lowers summed latency."""
        return max(0.0, (self.fixed_s - queued * self.per_frame_s) / (queued + 1))


class AdaptiveWindow:
    """The rule in the module docstring, learning t(b) and the arrival gap as it runs."""

    mode: WindowMode = "adaptive"

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._seconds_by_size: dict[int, float] = {}  # EWMA of batch time per batch size
        self._mean_gap_s: float | None = None
        self._last_arrival: float | None = None
        self.cost: BatchCost | None = None  # None until two batch sizes have been seen

    def observe_arrival(self, at: float) -> None:
        if self._last_arrival is not None:
            gap = min(max(0.0, at - self._last_arrival), _LONGEST_GAP_S)
            self._mean_gap_s = _ewma(self._mean_gap_s, gap)
        self._last_arrival = at

    def observe_batch(self, size: int, seconds: float) -> None:
        self._seconds_by_size[size] = _ewma(self._seconds_by_size.get(size), seconds)
        self.cost = fit_batch_cost(self._seconds_by_size.items())

    @property
    def mean_gap_s(self) -> float | None:
        return self._mean_gap_s

    def window_s(self, queued: int) -> float:
        if self.cost is None or self._mean_gap_s is None:
            return 0.0
        wait = min(self.cost.break_even_wait_s(queued), self.max_wait_s)
        return wait if self._mean_gap_s <= wait else 0.0

    def remaining_s(self, queued: int, oldest_at: float, newest_at: float, now: float) -> float:
        window = self.window_s(queued)
        if window <= 0.0:
            return 0.0
        return min(newest_at + window, oldest_at + self.max_wait_s) - now


def make_window(mode: WindowMode, max_wait_ms: float) -> BatchWindow:
    if mode == "adaptive":
        return AdaptiveWindow(max_wait_ms / 1000.0)
    return FixedWindow(max_wait_ms / 1000.0)


def fit_batch_cost(samples: Iterable[tuple[int, float]]) -> BatchCost | None:
    """Least-squares line through (batch size, seconds), one point per size; None below two
    sizes. Clamped to non-negative parts: noise must not invent a negative cost."""
    points = list(samples)
    if len({size for size, _ in points}) < 2:
        return None
    count = len(points)
    mean_size = sum(size for size, _ in points) / count
    mean_s = sum(seconds for _, seconds in points) / count
    spread = sum((size - mean_size) ** 2 for size, _ in points)
    slope = sum((size - mean_size) * (seconds - mean_s) for size, seconds in points) / spread
    per_frame = max(0.0, slope)
    fixed = max(0.0, mean_s - per_frame * mean_size)
    return BatchCost(fixed_s=fixed, per_frame_s=per_frame)


def _ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else previous + _ALPHA * (sample - previous)
