"""How long a batch that is not full may wait for more frames: a fixed window, or one derived
from the arrival pattern and what batching actually saves on this model and machine.

The adaptive rule. Fit batch time as t(b) = a + m·b (a: cost paid once per batch, m: cost per
frame) from the batches the service runs. With b frames queued and the model idle, if one more
frame arrives r seconds from now and the batch waits for it, each of the b frames finishes
r + m later and the newcomer a - r sooner (it no longer runs alone after them): summed latency
changes by (b + 1)·r + b·m - a. If no frame comes within the wait W, the b frames lose W each.
The recent gaps between arrivals (those that followed a gap like the one before the newest
frame: clients answered together come back together) give the odds of each case, so for every
candidate W the expected change is computable; the batch waits for the W with the best
expected saving, and not at all when no W saves anything. Where batching buys nothing
(a ≈ 0: a CPU whose cores one frame already fills) that is never; on an accelerator where a
batch of 8 costs little more than one, it waits about as long as the next frame usually
takes, which with bursty closed-loop clients can be far shorter than the mean gap.
`max_wait_ms` caps any hold: for the fixed window from the batch's oldest frame, for the
adaptive one from when the model became free (time spent queued behind a busy model is sunk,
and must not forbid a hold that pays).
"""

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

WindowMode = Literal["adaptive", "fixed"]

_ALPHA = 0.2  # EWMA weight of the newest batch time: adapts within ~10 batches
_GAPS_KEPT = 64  # recent arrival gaps: the odds of the next frame coming within a wait
_LONGEST_GAP_S = 1.0  # gaps beyond any sensible wait are all alike
_SLACK_S = 0.001  # wait a little past the gap to catch: arrivals jitter
_ALIKE_ENOUGH = 8  # gaps after a gap like the newest one, enough to judge by


class BatchWindow(Protocol):
    """Decides, while frames wait and the model is idle, how much longer to wait for more."""

    mode: WindowMode

    def observe_arrival(self, at: float) -> None: ...

    def observe_batch(self, size: int, seconds: float) -> None: ...

    def window_s(self, queued: int) -> float:
        """How long `queued` frames would now wait for one more (0: run at once)."""
        ...

    def remaining_s(
        self, *, queued: int, oldest_at: float, newest_at: float, held_since: float, now: float
    ) -> float:
        """Seconds left to wait for another frame; <= 0 runs the batch now. `held_since`:
        when the model became free with these frames waiting (a hold starts there)."""
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

    def remaining_s(
        self, *, queued: int, oldest_at: float, newest_at: float, held_since: float, now: float
    ) -> float:
        return oldest_at + self.max_wait_s - now


@dataclass(frozen=True, slots=True)
class BatchCost:
    """t(b) = fixed_s + per_frame_s · b, fitted from observed batches."""

    fixed_s: float
    per_frame_s: float

    def latency_change_s(self, queued: int, arrives_in_s: float) -> float:
        """Summed latency change from holding `queued` frames for one arriving in the given
        time, against running them now and the newcomer alone after them."""
        return (queued + 1) * arrives_in_s + queued * self.per_frame_s - self.fixed_s

    def break_even_wait_s(self, queued: int) -> float:
        """w*(b): the longest wait for one more frame that still lowers summed latency."""
        return max(0.0, (self.fixed_s - queued * self.per_frame_s) / (queued + 1))


class AdaptiveWindow:
    """The rule in the module docstring, learning t(b) and the arrival gaps as it runs."""

    mode: WindowMode = "adaptive"

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._seconds_by_size: dict[int, float] = {}  # EWMA of batch time per batch size
        # (gap before a frame, gap after it): what follows a short gap is not what follows a
        # long one when clients are answered together and come back together.
        self._gap_pairs: deque[tuple[float, float]] = deque(maxlen=_GAPS_KEPT)
        self._last_gap_s: float | None = None
        self._last_arrival: float | None = None
        self.cost: BatchCost | None = None  # None until two batch sizes have been seen

    def observe_arrival(self, at: float) -> None:
        if self._last_arrival is not None:
            gap = min(max(0.0, at - self._last_arrival), _LONGEST_GAP_S)
            if self._last_gap_s is not None:
                self._gap_pairs.append((self._last_gap_s, gap))
            self._last_gap_s = gap
        self._last_arrival = at

    def _next_gaps(self) -> list[float]:
        """Recent gaps that followed a gap like the newest frame's (both shorter than the
        mean gap, or both not: the mean falls between the short and long gaps of bursts);
        all recent gaps while too few match to judge by."""
        if self._last_gap_s is None or not self._gap_pairs:
            return []
        mean = sum(before for before, _ in self._gap_pairs) / len(self._gap_pairs)
        newest_was_short = self._last_gap_s < mean
        alike = [after for before, after in self._gap_pairs if (before < mean) == newest_was_short]
        if len(alike) >= _ALIKE_ENOUGH:
            return alike
        return [after for _, after in self._gap_pairs]

    def observe_batch(self, size: int, seconds: float) -> None:
        self._seconds_by_size[size] = _ewma(self._seconds_by_size.get(size), seconds)
        self.cost = fit_batch_cost(self._seconds_by_size.items())

    def window_s(self, queued: int) -> float:
        return self._best_wait_s(queued, since_newest_s=0.0, longest_s=self.max_wait_s)

    def remaining_s(
        self, *, queued: int, oldest_at: float, newest_at: float, held_since: float, now: float
    ) -> float:
        # Time a frame spent queued behind a busy model is sunk: the cap bounds the hold.
        hold_ends = held_since + self.max_wait_s
        wait = self._best_wait_s(
            queued, since_newest_s=max(0.0, now - newest_at), longest_s=hold_ends - now
        )
        if wait <= 0.0:
            return 0.0
        return min(newest_at + wait, hold_ends) - now

    def _best_wait_s(self, queued: int, *, since_newest_s: float, longest_s: float) -> float:
        """The wait (from the newest frame's arrival) with the best expected latency saving,
        given that `since_newest_s` has passed with no arrival and at most `longest_s` more
        may be spent; 0 when none saves anything."""
        cost = self.cost
        if cost is None or cost.break_even_wait_s(queued) <= 0.0:
            return 0.0  # no arrival, however soon, would pay for the hold
        still_possible = sorted(gap for gap in self._next_gaps() if gap > since_newest_s)
        best_wait, best_change = 0.0, 0.0
        arrives_in_s = 0.0  # summed time from now to the arrivals caught so far
        for caught, gap in enumerate(still_possible, start=1):
            wait_s = gap + _SLACK_S - since_newest_s
            if wait_s > longest_s:
                break
            arrives_in_s += gap - since_newest_s
            p_caught = caught / len(still_possible)
            change = (
                p_caught * cost.latency_change_s(queued, arrives_in_s / caught)
                + (1.0 - p_caught) * queued * wait_s
            )
            if change < best_change:
                best_wait, best_change = gap + _SLACK_S, change
        return best_wait


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
