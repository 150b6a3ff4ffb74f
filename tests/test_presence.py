"""Presence events from frame sequences: N of M opens, flickers don't, absence closes."""

import pytest

from app.presence import PresenceTracker


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(tracker: PresenceTracker, clock: FakeClock, phones: list[int], step_s: float = 0.5):  # type: ignore[no-untyped-def]
    events = []
    for count in phones:
        clock.now += step_s
        event = tracker.observe("cam-1", count)
        if event is not None:
            events.append(event)
    return events


def test_three_of_five_opens_an_event() -> None:
    clock = FakeClock()
    tracker = PresenceTracker(min_hits=3, window=5, clear_after_s=2.0, clock=clock)

    events = _run(tracker, clock, [1, 0, 1, 0, 1])

    assert [(e.state, e.frame) for e in events] == [("opened", 5)]
    assert tracker.is_open("cam-1")


@pytest.mark.parametrize("sequence", [[1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]])
def test_flickers_open_nothing(sequence: list[int]) -> None:
    clock = FakeClock()
    tracker = PresenceTracker(min_hits=3, window=5, clear_after_s=2.0, clock=clock)

    assert _run(tracker, clock, sequence) == []
    assert not tracker.is_open("cam-1")


def test_absence_for_clear_time_closes_and_short_gaps_do_not() -> None:
    clock = FakeClock()
    tracker = PresenceTracker(min_hits=2, window=3, clear_after_s=2.0, clock=clock)

    # opens at frame 2; a 1.5 s gap (3 frames x 0.5 s) keeps it open; 2 s of absence closes
    events = _run(tracker, clock, [1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0])

    assert [(e.state, e.frame) for e in events] == [("opened", 2), ("closed", 10)]
    assert events[1].duration_s == pytest.approx(4.0)
    assert not tracker.is_open("cam-1")


def test_sources_are_independent() -> None:
    clock = FakeClock()
    tracker = PresenceTracker(min_hits=1, window=1, clear_after_s=0.0, clock=clock)

    assert tracker.observe("a", 2) is not None
    assert tracker.observe("b", 0) is None
    assert tracker.is_open("a")
    assert not tracker.is_open("b")


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="min_hits"):
        PresenceTracker(min_hits=6, window=5)
