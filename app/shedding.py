"""ASGI middleware that sheds detection requests the queue cannot take before reading them.

Starlette reads and parses a whole multipart or JSON body before any route code runs; under
a flood that work (hundreds of kB per request) starved the model and made each 503 take
seconds. Here a request to a detection endpoint that finds the batcher's queue full is
answered 503 + Retry-After at once, from its headers alone, and counted and logged exactly as
the route would have. Requests without a valid API key pass through, so they still get 401.
"""

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import DetectorError, QueueFullError
from app.routers.auth import key_accepted, presented_key
from app.routers.errors import METHOD_BY_PATH, detector_error_response
from app.runtime import Runtime


class ShedWhenFull:
    """`on_shed(method, error)` counts and logs each refusal under the route's method."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime,
        on_shed: Callable[[str, DetectorError], None],
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.on_shed = on_shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = METHOD_BY_PATH.get(scope["path"]) if scope["type"] == "http" else None
        pipeline = self.runtime.pipeline
        if (
            method is None
            or scope["method"] != "POST"
            or pipeline is None
            or self.runtime.draining  # the route answers those, as shutting_down
            or pipeline.batcher.has_room()
            or not self._authorized(scope)
        ):
            await self.app(scope, receive, send)
            return
        try:
            pipeline.batcher.check_capacity()  # raises and counts the refused frame
        except QueueFullError as exc:
            self.on_shed(method, exc)
            await detector_error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)  # room appeared meanwhile

    def _authorized(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        candidate = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        return key_accepted(self.runtime.api_keys, candidate)
