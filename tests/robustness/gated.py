"""Fault-injection helpers for in-process tests: a model that can be held, made to fail, and
that records which frames it ran; a raw ASGI request whose client can walk away."""

import asyncio
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import numpy as np
from fastapi import FastAPI

from app.inference.model import OnnxModel
from tests.utils.prom_text import metric_value


class GatedModel:
    """Wraps a real model. While `hold()` is in effect every batch waits inside `run` (a
    hung model) until `release()`; `fail_next` batches raise; `ran_x1` lists the anchor-0
    box x1 (input pixels) of every frame that went through the model, which identifies the
    image when the test images put their red box at different x positions. `delay_s` is
    added to every batch, the warm-up's included (what the service then measures)."""

    def __init__(self, inner: OnnxModel, *, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.info = inner.info
        self.delay_s = delay_s
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self.entered = 0  # batches that reached the model
        self.fail_next = 0
        self.ran_x1: list[float] = []

    def hold(self) -> None:
        """From now on batches wait in the model; `entered` restarts at 0 (after warm-up)."""
        with self._lock:
            self.entered = 0
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self.entered += 1
        if not self._open.wait(timeout=60):
            raise RuntimeError("test never released the held model")
        time.sleep(self.delay_s)
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("injected model failure")
        scores, boxes = self.inner.run(batch)
        with self._lock:
            self.ran_x1.extend(round(float(x), 1) for x in boxes[:, 0, 0])
        return scores, boxes


async def until(predicate: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Poll `predicate` every 5 ms; AssertionError if it is still false after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.005)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the one series `name{labels}` in a Prometheus exposition (0 if absent)."""
    return metric_value(text, name, default=0.0, **labels)


class LeavingClient:
    """One POST sent straight to the ASGI app; its client disconnects on `leave()`."""

    def __init__(self, service: FastAPI, path: str, content_type: str, body: bytes) -> None:
        self._service = service
        self._gone = asyncio.Event()
        self.messages: list[MutableMapping[str, Any]] = []
        self._scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"test"),
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
            "state": {},
        }
        self._body = body
        self._body_sent = False

    async def _receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)

    async def run(self) -> None:
        await self._service(self._scope, self._receive, self._send)

    def leave(self) -> None:
        self._gone.set()

    @property
    def status(self) -> int | None:
        for message in self.messages:
            if message["type"] == "http.response.start":
                return int(message["status"])
        return None
