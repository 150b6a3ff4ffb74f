"""What a running service holds: settings, metrics, and (once loaded) the pipeline."""

import asyncio
from dataclasses import dataclass, field

from opentelemetry.trace import NoOpTracer, Tracer

from app.config import Settings
from app.errors import ModelNotReadyError, ShuttingDownError
from app.inference.pipeline import DetectionPipeline
from app.inference.types import ImageResult
from app.presence import PresenceEvent, PresenceTracker
from app.telemetry.logging import get_logger
from app.telemetry.metrics import DetectionMetrics

logger = get_logger(__name__)


@dataclass
class Runtime:
    """The app's mutable state; the lifespan fills it, routers read it."""

    settings: Settings
    metrics: DetectionMetrics
    tracer: Tracer = field(default_factory=NoOpTracer)
    pipeline: DetectionPipeline | None = None
    not_ready_reason: str | None = "model is loading"
    draining: bool = False
    in_flight: int = 0  # detection requests accepted and not yet answered
    api_keys: list[str] = field(default_factory=list)  # empty: auth off
    presence: PresenceTracker = field(default_factory=PresenceTracker)

    @property
    def ready(self) -> bool:
        return (
            self.not_ready_reason is None
            and self.pipeline is not None
            and (self.pipeline.batcher.running)
        )

    def admit(self) -> None:
        """Accept one detection request, or raise the 503 that says why not.

        An accepted request is counted in `in_flight` until `release()`, and is answered
        even if a drain starts meanwhile.
        """
        if self.draining:
            raise ShuttingDownError("service is shutting down", retry_after_s=1.0)
        self.require_pipeline()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def require_pipeline(self) -> DetectionPipeline:
        """The pipeline, or the 503 error that explains why there is none to use."""
        if self.pipeline is None or (self.not_ready_reason is not None and not self.draining):
            raise ModelNotReadyError(self.not_ready_reason or "model is not loaded")
        return self.pipeline

    def begin_drain(self) -> None:
        """Readiness turns 503 and new requests are refused; accepted ones still finish."""
        self.draining = True
        self.not_ready_reason = "shutting down"

    def record_result(self, result: ImageResult, source: str | None) -> PresenceEvent | None:
        """Count one image's phones (by region and source) and feed presence tracking."""
        width, height = max(result.width, 1), max(result.height, 1)
        centres = [
            ((d.box.x1 + d.box.x2) / 2 / width, (d.box.y1 + d.box.y2) / 2 / height)
            for d in result.detections
        ]
        self.metrics.record_phones(count=result.count, centres=centres, source=source)
        return self.note_phones(source, result.count)

    def note_phones(self, source: str | None, phones: int) -> PresenceEvent | None:
        """Feed one frame's phone count to the presence tracker; record and log any event."""
        if source is None:
            return None
        event = self.presence.observe(source, phones)
        if event is not None:
            self.metrics.record_presence(source=source, state=event.state)
            logger.info(
                "phone presence %s",
                event.state,
                extra={"source": source, "frame": event.frame, "phones": event.phones,
                       "duration_s": event.duration_s},
            )  # fmt: skip
        return event

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until no accepted request is unanswered; False if `timeout_s` ran out."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.in_flight > 0:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True
