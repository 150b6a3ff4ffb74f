"""The overload point: our service far past what it can sustain, for a bounded time, with its
production defaults (queue 64, deadline 10 s).

Two phases on one server. **4x load**: requests arrive open loop (Poisson) at four times the
rate the service sustained in the closed-loop points, as many independent cameras and callers
would send them; the target is that accepted requests keep p99 under the deadline and the
rest get 503 at once. **Flood**: 64 closed-loop clients that resend as soon as they are
answered, an unbounded offered load; there a 503 takes as long as the other 63 clients keep
the two cores busy (Little's law), so it shows robustness, not refusal speed. Reported per
phase: accepted p99, 503 p50/p99, answers; then peak RSS and how soon after the flood /readyz
answered 200.
"""

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.loadgen import LoadResult, closed_loop, open_loop
from bench.servers import MemoryWatch, our_service, running

# The production defaults (the bench's other points run with a long queue and deadline).
QUEUE_SIZE = 64
DEADLINE_MS = 10_000
LOAD_FACTOR = 4.0
FLOOD_CLIENTS = 2 * QUEUE_SIZE
PROBE_DELAY_S = 3.0  # the probe starts once the queue has filled, ends before the load does


def measure_overload(
    model: Path,
    jpeg: bytes,
    *,
    sustainable_per_s: float,
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
        extra={"PHONE_DET_QUEUE_SIZE": str(QUEUE_SIZE), "PHONE_DET_DEADLINE_MS": str(DEADLINE_MS)},
    )
    url = f"http://127.0.0.1:{port}{spec.detect_path}"
    rate = LOAD_FACTOR * sustainable_per_s
    with (
        running(spec, port=port, jpeg=jpeg, log_path=log_path) as pid,
        MemoryWatch(pid) as memory,
        tempfile.NamedTemporaryFile(suffix=".jpg") as jpeg_file,
    ):
        jpeg_file.write(jpeg)
        jpeg_file.flush()
        server = psutil.Process(pid)
        probe = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.probe", url, jpeg_file.name),
                *(str(window_s - PROBE_DELAY_S), str(PROBE_DELAY_S)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        with _Usage(server, memory) as four_x_usage:
            four_x = asyncio.run(
                open_loop(
                    url,
                    jpeg,
                    rate_per_s=rate,
                    duration_s=window_s,
                    warmup_s=2.0,
                    label=f"{label} {LOAD_FACTOR:.0f}x",
                )
            )
        probed = json.loads(probe.communicate(timeout=120)[0])
        with _Usage(server, memory) as flood_usage:
            flood = asyncio.run(
                closed_loop(
                    url,
                    jpeg,
                    concurrency=FLOOD_CLIENTS,
                    duration_s=window_s,
                    warmup_s=2.0,
                    label=f"{label} flood",
                )
            )
        ready_after_ms = _ready_after_ms(f"http://127.0.0.1:{port}/readyz")
    return {
        "queue_size": QUEUE_SIZE,
        "deadline_ms": DEADLINE_MS,
        "sustainable_per_s": sustainable_per_s,
        "offered_per_s": rate,
        "four_x": {**_phase(four_x), **four_x_usage.as_dict(), "probe": probed},
        "flood": {"clients": FLOOD_CLIENTS, **_phase(flood), **flood_usage.as_dict()},
        "peak_rss_mb": memory.peak_bytes / 2**20,
        "ready_after_ms": ready_after_ms,
    }


def _phase(result: LoadResult) -> dict[str, Any]:
    return {
        "accepted_per_s": result.images_per_s,
        "accepted_p99_ms": result.p99_ms,
        "errors": result.errors,
        "shed_p50_ms": result.shed_p50_ms,
        "shed_p99_ms": result.shed_p99_ms,
    }


class _Usage:
    """A phase's peak server RSS and the cores the server and this load generator used: on
    a shared machine the generator's share is CPU the server did not get."""

    def __init__(self, server: psutil.Process, memory: MemoryWatch) -> None:
        self._server = server
        self._memory = memory
        self._generator = psutil.Process()

    def __enter__(self) -> "_Usage":
        self._memory.reset()
        self._started = time.perf_counter()
        self._cpu = (_cpu_s(self._server), _cpu_s(self._generator))
        return self

    def __exit__(self, *_: object) -> None:
        elapsed = time.perf_counter() - self._started
        self.server_cores = (_cpu_s(self._server) - self._cpu[0]) / elapsed
        self.generator_cores = (_cpu_s(self._generator) - self._cpu[1]) / elapsed
        self.peak_rss_mb = self._memory.peak_bytes / 2**20

    def as_dict(self) -> dict[str, float]:
        return {
            "peak_rss_mb": self.peak_rss_mb,
            "server_cores": self.server_cores,
            "generator_cores": self.generator_cores,
        }


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


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
