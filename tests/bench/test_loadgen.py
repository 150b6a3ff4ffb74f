"""The bench's open-loop generator keeps its rate whatever the server does, and sorts answers;
the probe beside it times the refusals a single caller gets."""

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from bench.loadgen import open_loop
from bench.probe import probe

pytestmark = pytest.mark.anyio

SLOW_S = 0.1


class EveryOtherRefused:
    """Refuses every other request at once with 503; answers the rest after SLOW_S."""

    def __init__(self) -> None:
        self.requests = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        status = 503 if next(self.requests) % 2 else 200
        if status == 200:
            await asyncio.sleep(SLOW_S)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


@contextlib.asynccontextmanager
async def serving_every_other_refused() -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(EveryOtherRefused(), host="127.0.0.1", port=0, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    finally:
        server.should_exit = True
        await serving


async def test_open_loop_keeps_the_offered_rate_while_answers_are_slow() -> None:
    async with serving_every_other_refused() as url:
        result = await open_loop(
            url,
            b"\xff\xd8jpeg",
            rate_per_s=50,
            duration_s=2.0,
            warmup_s=0.2,
            seed=1,
        )

    answered = result.ok + sum(result.errors.values())
    # Poisson arrivals: 100 expected, sd 10; one client waiting for each answer would get 20
    assert 65 <= answered <= 135
    assert set(result.errors) == {"503"}
    assert abs(result.ok - result.errors["503"]) <= 2
    assert result.p50_ms >= SLOW_S * 1000
    assert result.shed_p50_ms < SLOW_S * 1000
    assert result.images_per_s == result.ok / 2.0


async def test_probe_times_only_the_refusals() -> None:
    async with serving_every_other_refused() as url:
        result = await asyncio.to_thread(probe, url, b"\xff\xd8jpeg", 1.0)

    # one request at a time, 0.1 s apart, every other one answered after SLOW_S
    assert 2 <= result["shed"] <= 7
    assert abs(result["shed"] - result["admitted"]) <= 1
    assert 0.0 < result["shed_p50_ms"] < SLOW_S * 1000
