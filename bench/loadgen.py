"""HTTP load: closed loop (K clients, each sending its next request when the last one answers)
and open loop (requests sent at a given rate whatever the answers, as independent cameras and
callers do)."""

import asyncio
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm


@dataclass
class LoadResult:
    """One load point: throughput, latency percentiles of answered requests, and errors."""

    concurrency: int
    duration_s: float
    ok: int
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    errors: dict[str, int] = field(default_factory=dict)  # "503", "timeout", ...
    error_p99_ms: float = 0.0  # how fast errors of any kind came back
    shed_p50_ms: float = 0.0  # how fast 503 refusals came back
    shed_p99_ms: float = 0.0
    peak_rss_mb: float = 0.0
    mean_batch: float | None = None  # frames per model run, where the server reports it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def multipart_body(jpeg: bytes) -> tuple[bytes, str]:
    """The request body and content type, built once so the client spends little CPU."""
    request = httpx.Request("POST", "http://x/", files={"file": ("frame.jpg", jpeg, "image/jpeg")})
    return request.read(), request.headers["content-type"]


async def closed_loop(
    url: str,
    jpeg: bytes,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 60.0,
    label: str = "",
) -> LoadResult:
    """Drive `url` with `concurrency` clients; answers that land after warm-up count."""
    body, content_type = multipart_body(jpeg)
    headers = {"content-type": content_type}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    tally = _Tally()
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    bar = tqdm(total=round(warmup_s + duration_s), desc=label, unit="s", leave=False)

    async def client(http: httpx.AsyncClient) -> None:
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            status = await _post(http, url, body, headers)
            done = time.perf_counter()
            # Every answer that lands inside the window counts, whenever it was sent: at a
            # high K one round trip can be longer than the window itself.
            if measure_from <= done <= stop_at:
                tally.add(status, (done - sent) * 1000.0)

    async def tick() -> None:
        while time.perf_counter() < stop_at:
            await asyncio.sleep(1.0)
            bar.update(1)

    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as http:
        ticker = asyncio.create_task(tick())
        clients = [asyncio.create_task(client(http)) for _ in range(concurrency)]
        # Requests still open when the window ends would not count; waiting for them costs
        # a whole round trip (K images), so they are abandoned. The next point's warm-up
        # absorbs whatever the server still finishes for them.
        await asyncio.wait(clients, timeout=max(0.0, stop_at - time.perf_counter()) + 0.05)
        for task in (*clients, ticker):
            task.cancel()
        await asyncio.gather(*clients, ticker, return_exceptions=True)
    bar.close()
    return tally.result(concurrency=concurrency, duration_s=duration_s)


async def _post(http: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> str:
    """The empty string for a 200, else the status code or the transport error's name."""
    try:
        response = await http.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return str(response.status_code) if response.status_code != 200 else ""


@dataclass
class _Tally:
    """Answers that count, sorted by outcome."""

    ok_ms: list[float] = field(default_factory=list)
    error_ms: list[float] = field(default_factory=list)
    shed_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, status: str, elapsed_ms: float) -> None:
        if not status:
            self.ok_ms.append(elapsed_ms)
            return
        self.errors[status] += 1
        self.error_ms.append(elapsed_ms)
        if status == "503":
            self.shed_ms.append(elapsed_ms)

    def result(self, *, concurrency: int, duration_s: float) -> LoadResult:
        latencies = np.array(self.ok_ms) if self.ok_ms else np.array([np.nan])
        return LoadResult(
            concurrency=concurrency,
            duration_s=duration_s,
            ok=len(self.ok_ms),
            images_per_s=len(self.ok_ms) / duration_s,
            p50_ms=float(np.percentile(latencies, 50)),
            p95_ms=float(np.percentile(latencies, 95)),
            p99_ms=float(np.percentile(latencies, 99)),
            mean_ms=float(np.mean(latencies)),
            errors=dict(self.errors),
            error_p99_ms=_percentile(self.error_ms, 99),
            shed_p50_ms=_percentile(self.shed_ms, 50),
            shed_p99_ms=_percentile(self.shed_ms, 99),
        )


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


async def open_loop(
    url: str,
    jpeg: bytes,
    *,
    rate_per_s: float,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 60.0,
    seed: int = 0,
    label: str = "",
) -> LoadResult:
    """Send requests with Poisson arrivals at `rate_per_s` for warm-up + duration, each one
    timed from when it was due (not when the generator got to it: a late send is latency the
    caller saw). Requests due inside the window count, and their answers are waited for."""
    body, content_type = multipart_body(jpeg)
    headers = {"content-type": content_type}
    arrivals = random.Random(seed)
    tally = _Tally()
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    bar = tqdm(total=round(warmup_s + duration_s), desc=label, unit="s", leave=False)

    async def one(http: httpx.AsyncClient, due: float) -> None:
        status = await _post(http, url, body, headers)
        if due >= measure_from:
            tally.add(status, (time.perf_counter() - due) * 1000.0)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as http:
        requests: list[asyncio.Task[None]] = []
        due = start
        shown = 0
        while due < stop_at:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            requests.append(asyncio.create_task(one(http, due)))
            due += arrivals.expovariate(rate_per_s)
            if int(time.perf_counter() - start) > shown:
                bar.update(1)
                shown += 1
        await asyncio.gather(*requests)
    bar.close()
    return tally.result(concurrency=0, duration_s=duration_s)
