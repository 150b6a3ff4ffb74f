"""The overload point: our service far past what it can sustain, for a bounded time.

Closed-loop clients several times the queue resend at once after each 503, so the service
sees a flood. Reported: what the accepted requests waited (p99 against the deadline), how
fast refusals came back (p99), what the clients got, peak RSS, and how soon after the flood
/readyz answered 200.
"""

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import closed_loop
from bench.servers import MemoryWatch, our_service, running

QUEUE_SIZE = 16
DEADLINE_MS = 10_000  # the production default
CLIENTS = 64  # 4x the queue


def measure_overload(
    model: Path,
    jpeg: bytes,
    *,
    port: int,
    threads: int,
    max_batch_size: int,
    window_s: float,
    log_path: Path,
    label: str,
) -> dict[str, Any]:
    spec = our_service(
        "overload",
        model,
        port=port,
        max_batch_size=max_batch_size,
        threads=threads,
        extra={
            "PHONE_DET_QUEUE_SIZE": str(QUEUE_SIZE),
            "PHONE_DET_DEADLINE_MS": str(DEADLINE_MS),
        },
    )
    with running(spec, port=port, jpeg=jpeg, log_path=log_path) as pid, MemoryWatch(pid) as memory:
        result = asyncio.run(
            closed_loop(
                f"http://127.0.0.1:{port}{spec.detect_path}",
                jpeg,
                concurrency=CLIENTS,
                duration_s=window_s,
                warmup_s=2.0,
                label=label,
            )
        )
        ready_after_ms = _ready_after_ms(f"http://127.0.0.1:{port}/readyz")
    return {
        "clients": CLIENTS,
        "queue_size": QUEUE_SIZE,
        "deadline_ms": DEADLINE_MS,
        "accepted_per_s": result.images_per_s,
        "accepted_p99_ms": result.p99_ms,
        "errors": result.errors,
        "shed_p50_ms": result.shed_p50_ms,
        "shed_p99_ms": result.shed_p99_ms,
        "peak_rss_mb": memory.peak_bytes / 2**20,
        "ready_after_ms": ready_after_ms,
    }


def _ready_after_ms(url: str, *, give_up_s: float = 30.0) -> float | None:
    started = time.perf_counter()
    while time.perf_counter() - started < give_up_s:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return (time.perf_counter() - started) * 1000.0
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return None
