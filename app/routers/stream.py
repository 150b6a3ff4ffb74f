"""WebSocket /v1/stream: JPEG frames in, detections per frame out, newest frames first.

The client sends each frame as a binary message (and may send `{"source": "..."}` as
text). The server answers every processed frame in order with
`{"type": "detections", "frame": n, ...}`. When frames arrive faster than the model runs,
the oldest unprocessed ones are dropped and reported (`{"type": "dropped", ...}`), so a
live camera never falls behind. Presence events for the source arrive as
`{"type": "presence", ...}`; a bad frame gets `{"type": "error", "frame": n, ...}`.
"""

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from app.errors import DetectorError
from app.inference.types import DetectOptions
from app.routers.auth import key_accepted, presented_key
from app.routers.convert import image_detections
from app.runtime import Runtime

router = APIRouter(tags=["stream"])

# WebSocket close codes (RFC 6455): policy violation, service restart, try again later.
_CLOSE_UNAUTHORIZED = 1008
_CLOSE_RESTARTING = 1012
_CLOSE_TRY_LATER = 1013


@router.websocket("/v1/stream")
async def stream(
    websocket: WebSocket,
    source: Annotated[str | None, Query(max_length=100)] = None,
    api_key: Annotated[
        str | None, Query(description="For browsers, which cannot set headers")
    ] = None,
    score_threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    iou_threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    max_detections: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> None:
    """Live detection over a WebSocket (see the module docstring for the protocol)."""
    runtime: Runtime = websocket.app.state.runtime
    candidate = (
        presented_key(websocket.headers.get("authorization"), websocket.headers.get("x-api-key"))
        or api_key
    )
    if not key_accepted(runtime.api_keys, candidate):
        runtime.metrics.record_error("unauthorized")
        await websocket.close(code=_CLOSE_UNAUTHORIZED, reason="missing or invalid API key")
        return
    await websocket.accept()
    if runtime.draining or runtime.pipeline is None or runtime.not_ready_reason is not None:
        await websocket.close(code=_CLOSE_TRY_LATER, reason=runtime.not_ready_reason or "not ready")
        return
    settings = runtime.settings
    session = _StreamSession(
        websocket,
        runtime,
        source=source,
        options=DetectOptions(
            score_threshold=settings.score_threshold
            if score_threshold is None
            else score_threshold,
            iou_threshold=settings.iou_threshold if iou_threshold is None else iou_threshold,
            max_detections=settings.max_detections if max_detections is None else max_detections,
        ),
        max_pending=settings.stream_max_pending,
    )
    await session.run()


class _StreamSession:
    """One connection: a receiver keeps the newest frames, a processor answers in order."""

    def __init__(
        self,
        websocket: WebSocket,
        runtime: Runtime,
        *,
        source: str | None,
        options: DetectOptions,
        max_pending: int,
    ) -> None:
        self._ws = websocket
        self._runtime = runtime
        self._source = source
        self._options = options
        self._pending: deque[tuple[int, bytes]] = deque()
        self._max_pending = max_pending
        self._dropped: list[int] = []
        self._dropped_total = 0
        self._arrived = asyncio.Event()
        self._closed = False

    async def run(self) -> None:
        receiver = asyncio.create_task(self._receive())
        processor = asyncio.create_task(self._process())
        done, _ = await asyncio.wait({receiver, processor}, return_when=asyncio.FIRST_COMPLETED)
        if processor not in done:
            # The client went away: answer nothing more, drop what is left.
            processor.cancel()
        for task in (receiver, processor):
            if task not in done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
        if self._source is not None:
            self._runtime.presence.forget(self._source)

    async def _receive(self) -> None:
        frame_no = 0
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                self._closed = True
                self._arrived.set()
                return
            if message.get("bytes") is not None:
                frame_no += 1
                if len(self._pending) >= self._max_pending:
                    oldest, _ = self._pending.popleft()
                    self._dropped.append(oldest)
                self._pending.append((frame_no, message["bytes"]))
                self._arrived.set()
            elif message.get("text"):
                self._control(message["text"])

    def _control(self, text: str) -> None:
        with contextlib.suppress(json.JSONDecodeError, TypeError, AttributeError):
            source = json.loads(text).get("source")
            if isinstance(source, str) and 0 < len(source) <= 100:
                self._source = source

    async def _process(self) -> None:
        pipeline = self._runtime.require_pipeline()
        deadline_s = self._runtime.settings.deadline_ms / 1000.0
        while True:
            if self._runtime.draining:
                await self._ws.close(code=_CLOSE_RESTARTING, reason="service is shutting down")
                return
            if self._dropped:
                await self._report_dropped()
            if not self._pending:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            frame_no, data = self._pending.popleft()
            started = time.perf_counter()
            try:
                (result,) = await pipeline.detect([data], self._options, deadline_s=deadline_s)
            except DetectorError as exc:
                status = "timeout" if exc.code == "timeout" else "error"
                self._runtime.metrics.record_request(
                    method="stream", status=status, seconds=time.perf_counter() - started
                )
                self._runtime.metrics.record_error(exc.code)
                await self._send(
                    {"type": "error", "frame": frame_no,
                     "error": {"code": exc.code, "message": exc.message}}
                )  # fmt: skip
                continue
            self._runtime.metrics.record_request(
                method="stream", status="success", seconds=time.perf_counter() - started
            )
            event = self._runtime.record_result(result, self._source)
            payload = image_detections(result).model_dump(exclude_none=True)
            await self._send(
                {"type": "detections", "frame": frame_no, "source": self._source, **payload}
            )
            if event is not None:
                await self._send(
                    {"type": "presence", "source": event.source, "state": event.state,
                     "frame": frame_no, "phones": event.phones, "duration_s": event.duration_s}
                )  # fmt: skip

    async def _report_dropped(self) -> None:
        frames, self._dropped = self._dropped, []
        self._dropped_total += len(frames)
        self._runtime.metrics.record_rejected("stream_dropped", len(frames))
        await self._send(
            {"type": "dropped", "frames": frames, "dropped_total": self._dropped_total}
        )

    async def _send(self, message: dict[str, Any]) -> None:
        await self._ws.send_text(json.dumps(message))
