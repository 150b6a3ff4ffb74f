"""Liveness and readiness probes."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.routers.deps import RuntimeDep
from app.schemas import HealthResponse, ReadinessResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """200 while the process is up and its event loop answers."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "Not ready, with the reason"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """200 only when the model is loaded and warmed up and the batcher is running."""
    if runtime.ready:
        return JSONResponse(ReadinessResponse(status="ready").model_dump(exclude_none=True))
    reason = runtime.not_ready_reason or "batcher is not running"
    body = ReadinessResponse(status="not_ready", reason=reason)
    return JSONResponse(body.model_dump(), status_code=503)
