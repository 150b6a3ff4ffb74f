"""WebhookNotifier: posts presence events to a source's webhook in the background, retrying
connection failures, 429 and 5xx answers with exponential backoff (tenacity)."""

import asyncio
import contextlib
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.sources.spec import mask_url
from app.telemetry.logging import get_logger
from app.telemetry.metrics import DetectionMetrics

logger = get_logger(__name__)


class _RetryableStatusError(Exception):
    """The receiver answered 429 or 5xx: it may accept the same event later."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class WebhookNotifier:
    """Delivers JSON events; `send` never blocks or raises, `close` cancels what is pending.

    Each event is tried `attempts` times at most; a 4xx other than 429 is final.
    """

    def __init__(
        self,
        *,
        metrics: DetectionMetrics,
        attempts: int,
        timeout_s: float,
        first_retry_s: float = 0.5,
        max_retry_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._metrics = metrics
        self._attempts = attempts
        self._first_retry_s = first_retry_s
        self._max_retry_s = max_retry_s
        # Redirects are not followed: an event goes exactly where the operator said.
        self._client = httpx.AsyncClient(
            timeout=timeout_s, transport=transport, follow_redirects=False
        )
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, url: str, event: dict[str, Any]) -> None:
        """Post `event` to `url` in the background."""
        task = asyncio.get_running_loop().create_task(self._deliver(url, event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, url: str, event: dict[str, Any]) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(
                multiplier=self._first_retry_s, max=self._max_retry_s, jitter=self._first_retry_s
            ),
            retry=retry_if_exception_type((httpx.TransportError, _RetryableStatusError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._client.post(url, json=event)
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _RetryableStatusError(response.status_code)
                    response.raise_for_status()
        except (httpx.HTTPError, _RetryableStatusError) as exc:
            reason = (
                f"HTTP {exc.response.status_code}"
                if isinstance(exc, httpx.HTTPStatusError)
                else str(exc)
                if isinstance(exc, _RetryableStatusError)
                else type(exc).__name__
            )
            self._metrics.record_webhook(outcome="failed")
            logger.warning(
                "presence webhook %s failed for source %s: %s",
                mask_url(url),
                event.get("source"),
                reason,
            )
            return
        self._metrics.record_webhook(outcome="delivered")

    async def close(self) -> None:
        """Cancel undelivered events and close the HTTP client."""
        for task in list(self._pending):
            task.cancel()
        for task in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()
