"""SourceManager: the set of camera sources (from the sources file and the API), each with
its reader thread and sampler task, started and stopped with the service."""

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from app.errors import SourceExistsError, SourceNotFoundError, TooManySourcesError
from app.runtime import Runtime
from app.sources.reader import Backoff, SourceReader
from app.sources.sampler import SamplerStats, SourceSampler
from app.sources.spec import (
    ResolvedUrl,
    SourceOrigin,
    SourceSpec,
    load_sources_file,
    mask_url,
    resolve_url,
)
from app.sources.webhook import WebhookNotifier
from app.telemetry.logging import get_logger

logger = get_logger(__name__)

# How long stop() waits for all reader threads together. A reader blocked in a network read
# notices the stop only when the read returns (at most its stall timeout); it is a daemon
# thread, so a slow one never holds up shutdown.
_JOIN_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A snapshot of one source for GET /v1/sources; URLs are masked."""

    spec: SourceSpec
    url: str
    webhook: str | None
    origin: SourceOrigin
    state: str
    state_since: float  # wall clock
    last_error: str | None
    frames_decoded: int
    decode_errors: int
    reconnects: int
    sampling: SamplerStats
    presence_open: bool


@dataclass(slots=True)
class _Source:
    spec: SourceSpec
    resolved: ResolvedUrl
    origin: SourceOrigin
    reader: SourceReader
    sampler: SourceSampler | None = None


class SourceManager:
    """Adds, lists and removes sources; `start()` begins reading every source, `stop()`
    ends them all. One source's failure never touches another's reader or sampler."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        settings = runtime.settings
        self._media_dir = settings.media_dir
        self._sources: dict[str, _Source] = {}
        self._started = False
        self._notifier: WebhookNotifier | None = None
        if settings.sources_file is not None:
            base_dir = settings.sources_file.resolve().parent
            for spec in load_sources_file(settings.sources_file):
                self._register(spec, origin="config", base_dir=base_dir)

    @property
    def ids(self) -> list[str]:
        return list(self._sources)

    async def start(self) -> None:
        """Start every source's reader and sampler (sampling waits until the model is ready)."""
        if self._started:
            return
        settings = self._runtime.settings
        self._notifier = WebhookNotifier(
            metrics=self._runtime.metrics,
            attempts=settings.source_webhook_attempts,
            timeout_s=settings.source_webhook_timeout_s,
        )
        self._started = True
        for source in self._sources.values():
            self._start_source(source)
        if self._sources:
            logger.info("reading %d camera source(s)", len(self._sources))

    async def stop(self) -> None:
        """Stop sampling and reading every source; pending webhook posts are dropped."""
        if not self._started:
            return
        self._started = False
        sources = list(self._sources.values())
        await asyncio.gather(*(self._stop_source(source) for source in sources))
        await asyncio.to_thread(_join_all, [source.reader for source in sources])
        if self._notifier is not None:
            await self._notifier.close()
            self._notifier = None

    def add(self, spec: SourceSpec, *, origin: SourceOrigin = "api") -> SourceStatus:
        """Register (and, once started, start) a source. Raises InvalidSourceError for a URL
        the origin may not use, SourceExistsError, TooManySourcesError."""
        source = self._register(spec, origin=origin, base_dir=None)
        if self._started:
            self._start_source(source)
        logger.info("source %s added: %s", spec.id, mask_url(spec.url))
        return self._status(source)

    async def remove(self, source_id: str) -> None:
        """Stop and forget a source; its open presence event is discarded."""
        source = self._sources.pop(source_id, None)
        if source is None:
            raise SourceNotFoundError(f"no source {source_id!r}")
        await self._stop_source(source)
        self._runtime.presence.forget(source_id)
        logger.info("source %s removed", source_id)

    def status(self, source_id: str) -> SourceStatus:
        source = self._sources.get(source_id)
        if source is None:
            raise SourceNotFoundError(f"no source {source_id!r}")
        return self._status(source)

    def statuses(self) -> list[SourceStatus]:
        return [self._status(source) for source in self._sources.values()]

    # -- internals -------------------------------------------------------------------------

    def _register(
        self, spec: SourceSpec, *, origin: SourceOrigin, base_dir: Path | None
    ) -> _Source:
        settings = self._runtime.settings
        if spec.id in self._sources:
            raise SourceExistsError(f"source {spec.id!r} already exists")
        if len(self._sources) >= settings.max_camera_sources:
            raise TooManySourcesError(
                f"already reading {settings.max_camera_sources} sources "
                "(PHONE_DET_MAX_CAMERA_SOURCES)"
            )
        resolved = resolve_url(
            spec.url, origin=origin, media_dir=self._media_dir, base_dir=base_dir
        )
        reader = SourceReader(
            spec.id,
            resolved,
            metrics=self._runtime.metrics,
            open_timeout_s=settings.source_open_timeout_s,
            stall_timeout_s=settings.source_stall_timeout_s,
            backoff=Backoff(
                initial_s=settings.source_backoff_initial_s, max_s=settings.source_backoff_max_s
            ),
        )
        source = _Source(spec=spec, resolved=resolved, origin=origin, reader=reader)
        self._sources[spec.id] = source
        self._runtime.metrics.record_source_added(source=spec.id)
        self._runtime.metrics.record_source_state(source=spec.id, state="stopped")
        return source

    def _start_source(self, source: _Source) -> None:
        assert self._notifier is not None
        source.reader.start()
        source.sampler = SourceSampler(source.spec, source.reader, self._runtime, self._notifier)
        source.sampler.start()

    async def _stop_source(self, source: _Source) -> None:
        if source.sampler is not None:
            await source.sampler.stop()
        source.reader.stop()

    def _status(self, source: _Source) -> SourceStatus:
        reader = source.reader
        return SourceStatus(
            spec=source.spec,
            url=mask_url(source.spec.url),
            webhook=mask_url(source.spec.webhook) if source.spec.webhook else None,
            origin=source.origin,
            state=reader.state,
            state_since=reader.state_since,
            last_error=reader.last_error,
            frames_decoded=reader.frames_decoded,
            decode_errors=reader.decode_errors,
            reconnects=reader.reconnects,
            sampling=source.sampler.stats if source.sampler is not None else SamplerStats(),
            presence_open=self._runtime.presence.is_open(source.spec.id),
        )


def _join_all(readers: list[SourceReader]) -> None:
    deadline = time.monotonic() + _JOIN_TIMEOUT_S
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
