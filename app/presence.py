"""Phone-presence events per source: a phone seen in at least N of the last M frames opens a
"phone in view" event; no phone for `clear_after_s` closes it. Single-frame flickers (false
positives, a phone passing by) open nothing."""

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """An event opened or closed for one source."""

    source: str
    state: str  # "opened" or "closed"
    frame: int  # the source's frame counter when it happened
    phones: int  # phones in that frame
    duration_s: float  # how long the event was open (0 when opening)


@dataclass(slots=True)
class _SourceState:
    recent: deque[bool]
    frames: int = 0
    open_since: float | None = None
    last_seen: float = 0.0


@dataclass
class PresenceTracker:
    """Tracks many sources; `observe` returns the event a frame caused, if any.

    `min_hits` of the last `window` frames must contain a phone to open; an open event
    closes on the first phone-free frame at least `clear_after_s` after the last phone.
    """

    min_hits: int = 3
    window: int = 5
    clear_after_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _sources: dict[str, _SourceState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.min_hits <= self.window:
            raise ValueError("need 1 <= min_hits <= window")
        if self.clear_after_s < 0:
            raise ValueError("clear_after_s must be >= 0")

    def observe(self, source: str, phones: int) -> PresenceEvent | None:
        """Record one frame of `source` with `phones` phones in it."""
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _SourceState(recent=deque(maxlen=self.window))
        now = self.clock()
        state.frames += 1
        seen = phones > 0
        state.recent.append(seen)
        if seen:
            state.last_seen = now
        if state.open_since is None:
            if sum(state.recent) >= self.min_hits:
                state.open_since = now
                return PresenceEvent(source, "opened", state.frames, phones, 0.0)
            return None
        if not seen and now - state.last_seen >= self.clear_after_s:
            duration = now - state.open_since
            state.open_since = None
            state.recent.clear()
            return PresenceEvent(source, "closed", state.frames, phones, round(duration, 3))
        return None

    def is_open(self, source: str) -> bool:
        state = self._sources.get(source)
        return state is not None and state.open_since is not None

    def forget(self, source: str) -> None:
        """Drop a source's state (its stream ended); an open event is simply discarded."""
        self._sources.pop(source, None)
