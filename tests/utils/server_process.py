"""Start `phone-detector serve` as a real process on a free loopback port."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = str(Path(sys.executable).parent / "phone-detector")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    model_path: Path, work_dir: Path, **env_overrides: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Serve `model_path`; returns (process, base URL) once /readyz says 200.

    stdout and stderr (the JSON logs) go to `work_dir / "server.log"`.
    """
    port = free_port()
    env = {
        **os.environ,
        "PHONE_DET_MODEL_PATH": str(model_path),
        "PHONE_DET_ALLOW_FETCH": "false",
        "PHONE_DET_MODEL_CACHE_DIR": str(work_dir / "cache"),
        **env_overrides,
    }
    with (work_dir / "server.log").open("wb") as log:  # the child keeps its own handle
        process = subprocess.Popen(
            [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    tail = (work_dir / "server.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"server did not become ready:\n{tail}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Kill the server if it still runs and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait()
