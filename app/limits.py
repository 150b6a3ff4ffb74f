"""ASGI middleware that refuses request bodies over a byte limit without reading them.

A declared Content-Length over the limit is answered 413 before any byte of the body is
read; a chunked body is counted as it streams, cut off at the limit, and whatever the app
then answers is replaced by the 413.
"""

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ImageTooLargeError


class RequestBodyLimit:
    """Applies to paths under `path_prefix`; `on_refused(path)` is told of each refusal."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        path_prefix: str = "/v1/",
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_prefix = path_prefix
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            if self.on_refused is not None:
                self.on_refused(scope["path"])
            await _send_too_large(send, self.max_body_bytes)
            return
        received = 0
        exceeded = False
        refused_sent = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Stop reading; the app sees a disconnect and its answer is replaced.
                    exceeded = True
                    if self.on_refused is not None:
                        self.on_refused(scope["path"])
                    return {"type": "http.disconnect"}
            return message

        async def replacing_send(message: Message) -> None:
            nonlocal refused_sent
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start" and not refused_sent:
                refused_sent = True
                await _send_too_large(send, self.max_body_bytes)

        try:
            await self.app(scope, counting_receive, replacing_send)
        except Exception:
            if not exceeded:
                raise
            if not refused_sent:
                await _send_too_large(send, self.max_body_bytes)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "code": ImageTooLargeError.code,
                "message": f"request body is over the {limit} byte limit",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": ImageTooLargeError.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
