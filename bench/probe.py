"""`python -m bench.probe URL JPEG_PATH SECONDS [DELAY_S]`: one light client, apart from the load.

The load generator shares the two cores with the server and times each request from when it
was due, so under load its own event loop adds to every latency it reports. This probe is a
separate process sending one request at a time, a few per second, and prints (as JSON) how
fast the refusals it got came back: what a single caller sees while the service sheds.
"""

import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.loadgen import multipart_body

PAUSE_S = 0.1  # between a probe's answer and its next request
# An admitted request waits seconds for its turn; the probe leaves it (the server counts it
# client_disconnected) to take many samples of refusals, not a few of waits.
GIVE_UP_S = 1.0


def probe(url: str, jpeg: bytes, duration_s: float) -> dict[str, float | int]:
    body, content_type = multipart_body(jpeg)
    shed_ms: list[float] = []
    admitted = 0  # answered, or still waiting when the probe gave up
    stop_at = time.perf_counter() + duration_s
    with httpx.Client(timeout=GIVE_UP_S) as http:
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            try:
                response = http.post(url, content=body, headers={"content-type": content_type})
            except httpx.TimeoutException:
                admitted += 1
            else:
                if response.status_code == 503:
                    shed_ms.append((time.perf_counter() - sent) * 1000.0)
                else:
                    admitted += 1
            time.sleep(PAUSE_S)
    return {
        "shed": len(shed_ms),
        "admitted": admitted,
        "shed_p50_ms": float(np.percentile(shed_ms, 50)) if shed_ms else 0.0,
        "shed_p99_ms": float(np.percentile(shed_ms, 99)) if shed_ms else 0.0,
    }


if __name__ == "__main__":
    url, jpeg_path, seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    sys.stdout.write(json.dumps(probe(url, jpeg_path.read_bytes(), seconds)) + "\n")
