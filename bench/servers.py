"""Start a server under test as a subprocess, wait until it answers, watch its memory, stop it."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.loadgen import multipart_body

ROOT = Path(__file__).resolve().parent.parent
SERVICE_BIN = ROOT / ".venv" / "bin" / "phone-detector"  # the service runs in its own venv


@dataclass
class ServerSpec:
    """How to start one server and where it takes a JPEG (multipart field `file`)."""

    name: str
    command: list[str]
    detect_path: str
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 180.0


def our_service(
    name: str, model: Path, *, port: int, max_batch_size: int, threads: int, extra: dict[str, str]
) -> ServerSpec:
    """`phone-detector serve` with the bench's settings (no fetch, a long deadline)."""
    env = {
        "PHONE_DET_MODEL_PATH": str(model),
        "PHONE_DET_ALLOW_FETCH": "false",
        "PHONE_DET_HOST": "127.0.0.1",
        "PHONE_DET_PORT": str(port),
        "PHONE_DET_MAX_BATCH_SIZE": str(max_batch_size),
        "PHONE_DET_INTRA_OP_THREADS": str(threads),
        "PHONE_DET_QUEUE_SIZE": "256",
        "PHONE_DET_DEADLINE_MS": "120000",
        "PHONE_DET_LOG_LEVEL": "warning",
        **extra,
    }
    return ServerSpec(
        name=name, command=[str(SERVICE_BIN), "serve"], detect_path="/v1/detect", env=env
    )


def peer(
    name: str, module: str, model: Path, *, port: int, threads: int, max_batch_size: int
) -> ServerSpec:
    """A peer framework's app from bench/peers, run with the bench venv's Python."""
    env = {
        "BENCH_MODEL_PATH": str(model),
        "BENCH_PORT": str(port),
        "BENCH_INTRA_OP_THREADS": str(threads),
        "BENCH_MAX_BATCH_SIZE": str(max_batch_size),
    }
    return ServerSpec(
        name=name, command=[sys.executable, "-m", module], detect_path="/detect", env=env
    )


class MemoryWatch:
    """Samples the resident memory of a process and all its descendants."""

    def __init__(self, pid: int, *, interval_s: float = 0.2) -> None:
        self._root = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_bytes = 0

    def tree_rss_bytes(self) -> int:
        total = 0
        with contextlib.suppress(psutil.Error):
            for proc in [self._root, *self._root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
        return total

    def reset(self) -> None:
        self.peak_bytes = self.tree_rss_bytes()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_bytes = max(self.peak_bytes, self.tree_rss_bytes())

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def running(spec: ServerSpec, *, port: int, jpeg: bytes, log_path: Path) -> Iterator[int]:
    """Start the server, wait until a real detection answers 200, yield its pid, then stop it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            spec.command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stopping it stops its children
        )
        try:
            _wait_until_answering(process, f"http://127.0.0.1:{port}{spec.detect_path}", jpeg, spec)
            yield process.pid
        finally:
            _stop(process)


def _wait_until_answering(
    process: subprocess.Popen[bytes], url: str, jpeg: bytes, spec: ServerSpec
) -> None:
    body, content_type = multipart_body(jpeg)
    give_up_at = time.monotonic() + spec.start_timeout_s
    while time.monotonic() < give_up_at:
        if process.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {process.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.post(
                url, content=body, headers={"content-type": content_type}, timeout=60
            )
            if response.status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{spec.name} did not answer within {spec.start_timeout_s:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Frameworks that start helper processes (Ray's raylet, workers) may leave them behind
    # when the parent exits; note them first and end any still alive afterwards.
    helpers: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        helpers = psutil.Process(process.pid).children(recursive=True)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for helper in helpers:
        with contextlib.suppress(psutil.Error):
            helper.kill()
