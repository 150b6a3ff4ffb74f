"""Run the app under uvicorn with a graceful drain on SIGTERM/SIGINT.

On the first signal the service turns not-ready and answers new detection requests with
503, waits (up to `drain_timeout_s`) until every accepted request is answered, and only
then lets uvicorn close its sockets and exit. A second signal exits at once.
"""

import asyncio
from types import FrameType

import uvicorn

from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from app.telemetry.logging import configure_logging, get_logger

logger = get_logger(__name__)


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None:  # second signal: stop now
            super().handle_exit(sig, frame)
            return
        logger.info(
            "signal %s: draining (up to %.0f s)", sig, self._runtime.settings.drain_timeout_s
        )
        self._runtime.begin_drain()
        self._drain_task = asyncio.get_event_loop().create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        drained = await self._runtime.wait_drained(self._runtime.settings.drain_timeout_s)
        if not drained:
            logger.warning("drain timeout: %d requests still in flight", self._runtime.in_flight)
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Serve until a signal; returns after the drain and shutdown."""
    configure_logging(settings.log_level, log_format=settings.log_format)
    service = create_app(settings)
    config = uvicorn.Config(
        service,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout_s)),
        access_log=False,
        log_config=None,  # keep the JSON logging set up above
    )
    _DrainingServer(config, service.state.runtime).run()
