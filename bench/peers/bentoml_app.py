"""BentoML peer: one worker, BentoML's adaptive batching on a batchable API."""

import os
import sys
from pathlib import Path
from typing import Any

import bentoml

from bench.peers import _shared


@bentoml.service(workers=1, traffic={"timeout": 600})
class PhoneDetector:
    def __init__(self) -> None:
        self.detector = _shared.load_detector()

    @bentoml.api(
        route="/detect",
        batchable=True,
        max_batch_size=_shared.max_batch_size(),
        max_latency_ms=600_000,  # never shed: the other servers do not either
    )
    def detect(self, file: list[Path]) -> list[dict[str, Any]]:
        prepared = [self.detector.prepare(path.read_bytes()) for path in file]
        results = _shared.detect_prepared(self.detector, prepared)
        return [{"results": [result]} for result in results]


if __name__ == "__main__":
    command = [sys.executable, "-m", "bentoml", "serve", f"{__spec__.name}:PhoneDetector"]
    command += ["--host", "127.0.0.1", "--port", str(_shared.port())]
    os.execv(sys.executable, command)
