"""GET/POST/DELETE /v1/sources: the camera sources the service reads, their state and
counters, added and removed at run time."""

import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from app.schemas import ErrorBody
from app.sources import SourceManager, SourceSpec, SourceStatus

router = APIRouter(prefix="/v1", tags=["sources"])


def _errors(*pairs: tuple[int, str]) -> dict[int | str, dict[str, object]]:
    return {status: {"model": ErrorBody, "description": text} for status, text in pairs}


_UNAUTHORIZED = (401, "API keys are configured and the request has none or a wrong one")
_NOT_FOUND = (404, "No source with this id")


def get_sources(request: Request) -> SourceManager:
    manager: SourceManager = request.app.state.sources
    return manager


SourcesDep = Annotated[SourceManager, Depends(get_sources)]
SourceId = Annotated[str, Path(max_length=100, examples=["hall-a-cam-3"])]


class SourceOut(BaseModel):
    """One source: its definition (credentials masked), connection state and counters."""

    id: str = Field(examples=["hall-a-cam-3"])
    url: str = Field(examples=["rtsp://***@10.0.0.21:554/stream1"])
    fps: float
    roi: tuple[float, float, float, float] | None
    labels: dict[str, str]
    webhook: str | None
    origin: str = Field(description="`config` (sources file) or `api`", examples=["config"])
    state: str = Field(description="connecting, up, backoff or stopped", examples=["up"])
    state_since: datetime.datetime
    last_error: str | None = Field(
        description="Why the last connection ended; null once frames flow again",
        examples=["cannot connect: Connection refused"],
    )
    frames_decoded: int
    frames_sampled: int
    frames_skipped: int = Field(description="Sampling ticks that found the model busy")
    decode_errors: int
    reconnects: int
    phones: int | None = Field(description="Phones in the last detected frame")
    last_detection_at: datetime.datetime | None
    last_frame_age_s: float | None = Field(description="Decode-to-detections time, last frame")
    presence_open: bool = Field(description="A phone-in-view event is open for this source")


class SourcesOut(BaseModel):
    sources: list[SourceOut]


def _out(status: SourceStatus) -> SourceOut:
    spec, sampling = status.spec, status.sampling
    return SourceOut(
        id=spec.id,
        url=status.url,
        fps=spec.fps,
        roi=spec.roi,
        labels=spec.labels,
        webhook=status.webhook,
        origin=status.origin,
        state=status.state,
        state_since=_utc(status.state_since),
        last_error=status.last_error,
        frames_decoded=status.frames_decoded,
        frames_sampled=sampling.frames_sampled,
        frames_skipped=sampling.frames_skipped,
        decode_errors=status.decode_errors,
        reconnects=status.reconnects,
        phones=sampling.phones,
        last_detection_at=(
            _utc(sampling.last_detection_at) if sampling.last_detection_at is not None else None
        ),
        last_frame_age_s=sampling.last_frame_age_s,
        presence_open=status.presence_open,
    )


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


@router.get("/sources", response_model=SourcesOut, responses=_errors(_UNAUTHORIZED))
async def list_sources(sources: SourcesDep) -> SourcesOut:
    """Every camera source with its state (`connecting`, `up`, `backoff`, `stopped`), last
    error and counters. URLs never show credentials."""
    return SourcesOut(sources=[_out(status) for status in sources.statuses()])


@router.get(
    "/sources/{source_id}",
    response_model=SourceOut,
    responses=_errors(_UNAUTHORIZED, _NOT_FOUND, (422, "Malformed id")),
)
async def get_source(source_id: SourceId, sources: SourcesDep) -> SourceOut:
    """One camera source; 404 `source_not_found` if there is none with this id."""
    return _out(sources.status(source_id))


@router.post(
    "/sources",
    response_model=SourceOut,
    status_code=201,
    responses=_errors(
        _UNAUTHORIZED,
        (409, "A source with this id exists, or MAX_CAMERA_SOURCES is reached"),
        (422, "Malformed definition, or a URL this API may not use"),
    ),
)
async def add_source(spec: SourceSpec, sources: SourcesDep) -> SourceOut:
    """Start reading a camera source. `url`: rtsp://, rtsps://, http(s)://, or the name of a
    video file inside PHONE_DET_MEDIA_DIR (never a path or file:// URL). 409 `source_exists`
    for a taken id, 422 `invalid_source` for a URL this API may not use."""
    return _out(sources.add(spec, origin="api"))


@router.delete(
    "/sources/{source_id}",
    status_code=204,
    response_class=Response,
    responses=_errors(_UNAUTHORIZED, _NOT_FOUND, (422, "Malformed id")),
)
async def remove_source(source_id: SourceId, sources: SourcesDep) -> Response:
    """Stop reading a camera source (a sources-file entry returns at the next start)."""
    await sources.remove(source_id)
    return Response(status_code=204)
