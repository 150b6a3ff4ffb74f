"""DecodeSlots: a first-come, first-served limit on how many images are decoded at a time.

A request's image holds a slot from the start of its decode until its detections are ready,
so however many requests wait, only `slots` images exist as decoded frames; the others stay
compressed bytes. Waiters are served in arrival order; one that is cancelled (its deadline
passed, its client left) leaves the line at once, and a slot granted to it just as it was
cancelled goes to the next in line.
"""

import asyncio
import contextlib
from collections import deque


class DecodeSlots:
    """At most `slots` holders at a time; `acquire` waits in FIFO order, `release` hands on."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self._free = slots
        # Invariant: a free slot means nobody is waiting (release hands a slot straight to the
        # first live waiter), so `acquire` may take a free slot without jumping the line.
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def held(self) -> int:
        """Slots taken now."""
        return self.slots - self._free

    @property
    def waiting(self) -> int:
        """Callers in line for a slot."""
        return sum(not waiter.done() for waiter in self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting behind earlier callers; cancelling the wait takes none."""
        if self._free:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted in the same loop turn as the cancel: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it already
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiting caller, or to the free pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if self._free >= self.slots:
            raise RuntimeError("DecodeSlots released more often than acquired")
        self._free += 1
