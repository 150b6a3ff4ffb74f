"""Helpers to run the app in-process (httpx over ASGI) with a chosen model."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.inference.model import OnnxModel
from app.main import create_app


def make_settings(**overrides: Any) -> Settings:
    """Settings that never touch the environment, the network or the user's cache."""
    base: dict[str, Any] = {"allow_fetch": False, "intra_op_threads": 1, "max_batch_size": 8}
    base.update(overrides)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_app(
    model: Any, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running and an httpx client bound to it."""
    service = create_app(make_settings(**overrides), model=model)
    async with service.router.lifespan_context(service):
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield service, client


class SlowModel:
    """Wraps a real OnnxModel, adding a delay and counting batch sizes; can be made to fail."""

    def __init__(self, inner: OnnxModel, *, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.info = inner.info
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []
        self.fail_next = 0

    def run(self, batch: Any) -> Any:
        import time

        self.batch_sizes.append(int(batch.shape[0]))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("injected model failure")
        return self.inner.run(batch)
