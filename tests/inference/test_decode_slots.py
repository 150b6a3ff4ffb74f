"""DecodeSlots: a FIFO limit whose waiters can be cancelled without losing or leaking a slot."""

import asyncio

import pytest

from app.inference.decode_slots import DecodeSlots

pytestmark = pytest.mark.anyio


async def _holder(slots: DecodeSlots, name: str, order: list[str], done: asyncio.Event) -> None:
    await slots.acquire()
    order.append(name)
    try:
        await done.wait()
    finally:
        slots.release()


async def test_slots_are_granted_in_arrival_order() -> None:
    slots = DecodeSlots(1)
    order: list[str] = []
    done = asyncio.Event()
    tasks = []
    for name in "abcd":
        tasks.append(asyncio.create_task(_holder(slots, name, order, done)))
        await asyncio.sleep(0)  # each reaches the line before the next starts

    assert order == ["a"]
    assert (slots.held, slots.waiting) == (1, 3)
    done.set()
    await asyncio.gather(*tasks)

    assert order == ["a", "b", "c", "d"]
    assert (slots.held, slots.waiting) == (0, 0)


async def test_cancelled_waiter_leaves_the_line_and_the_next_one_gets_the_slot() -> None:
    slots = DecodeSlots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)

    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert slots.waiting == 1
    slots.release()
    await asyncio.wait_for(second, 1)

    assert first.cancelled()
    assert slots.held == 1
    slots.release()
    assert slots.held == 0


async def test_slot_granted_as_the_waiter_is_cancelled_passes_to_the_next() -> None:
    slots = DecodeSlots(1)
    await slots.acquire()
    unlucky = asyncio.create_task(slots.acquire())
    next_in_line = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)

    slots.release()  # grants `unlucky` its slot ...
    unlucky.cancel()  # ... which is cancelled before it runs again
    await asyncio.gather(unlucky, return_exceptions=True)
    await asyncio.wait_for(next_in_line, 1)

    assert unlucky.cancelled()
    assert (slots.held, slots.waiting) == (1, 0)


async def test_waiter_timing_out_takes_no_slot() -> None:
    slots = DecodeSlots(1)
    await slots.acquire()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await slots.acquire()

    assert (slots.held, slots.waiting) == (1, 0)
    slots.release()
    await asyncio.wait_for(slots.acquire(), 1)  # the free slot was not lost


async def test_releasing_more_than_acquired_and_zero_slots_are_refused() -> None:
    with pytest.raises(ValueError, match="slots"):
        DecodeSlots(0)
    slots = DecodeSlots(2)
    with pytest.raises(RuntimeError):
        slots.release()
