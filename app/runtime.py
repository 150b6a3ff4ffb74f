"""What a running service holds: settings, metrics, and (once loaded) the pipeline."""

import asyncio
from dataclasses import dataclass, field

from opentelemetry.trace import NoOpTracer, Tracer

from app.config import Settings
from app.errors import ModelNotReadyError, ShuttingDownError
from app.inference.pipeline import DetectionPipeline
from app.telemetry.metrics import DetectionMetrics


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

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until no accepted request is unanswered; False if `timeout_s` ran out."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.in_flight > 0:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True
