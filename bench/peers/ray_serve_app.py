"""Ray Serve peer: one replica, decode per request off the loop, `@serve.batch` for the model."""

import asyncio
import signal
import threading
from typing import Any

import ray
from ray import serve
from starlette.requests import Request

from bench.peers import _shared


@serve.deployment(num_replicas=1, max_ongoing_requests=512, ray_actor_options={"num_cpus": 0})
class PhoneDetector:
    def __init__(self) -> None:
        self.detector = _shared.load_detector()

    async def __call__(self, request: Request) -> dict[str, Any]:
        form = await request.form()
        data = await form["file"].read()  # type: ignore[union-attr]
        prepared = await asyncio.to_thread(self.detector.prepare, data)
        return {"results": [await self.detect(prepared)]}

    @serve.batch(max_batch_size=_shared.max_batch_size(), batch_wait_timeout_s=_shared.BATCH_WAIT_S)
    async def detect(self, prepared: list[Any]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(_shared.detect_prepared, self.detector, prepared)


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": _shared.port()})
    serve.run(PhoneDetector.bind(), route_prefix="/detect")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
