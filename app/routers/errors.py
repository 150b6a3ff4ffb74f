"""Errors -> the one JSON error shape: handlers for our DetectorErrors, request validation,
Starlette's HTTP errors and anything unexpected (logged, never shown)."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import DetectorError, UnauthorizedError
from app.runtime import Runtime
from app.telemetry.logging import get_logger

logger = get_logger(__name__)

# Requests refused before their route ran are still counted under the route's method.
METHOD_BY_PATH = {
    "/v1/detect": "multipart",
    "/v1/detect/base64": "base64",
    "/v1/detect/render": "render",
}


def count_refused_body(runtime: Runtime, path: str) -> None:
    """Count a request body refused by the size limit before any route saw it."""
    method = METHOD_BY_PATH.get(path)
    if method is not None:
        runtime.metrics.record_request(method=method, status="error", seconds=None)
    runtime.metrics.record_error("too_large")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def detector_error_response(exc: DetectorError) -> JSONResponse:
    """A DetectorError as its status and JSON body, with Retry-After or WWW-Authenticate."""
    headers = None
    if exc.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    if isinstance(exc, UnauthorizedError):
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(exc.http_status, exc.code, exc.message, headers)


def add_error_handlers(service: FastAPI, runtime: Runtime) -> None:
    """Render every error as `{"error": {"code", "message"}}` with its status, and count it."""

    async def on_detector_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DetectorError)
        if exc.http_status == 500:  # a bug or a model failure: keep the cause for the log
            logger.error("%r", exc, exc_info=exc.__cause__ or exc)
        return detector_error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        method = METHOD_BY_PATH.get(request.url.path)
        if method is not None:
            runtime.metrics.record_request(method=method, status="error", seconds=None)
        runtime.metrics.record_error("invalid_request")
        return error_response(422, "invalid_request", problems or "invalid request")

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error", exc_info=exc)
        runtime.metrics.record_error("internal_error")
        return error_response(500, "internal_error", "internal error; see the service log")

    service.add_exception_handler(DetectorError, on_detector_error)
    service.add_exception_handler(RequestValidationError, on_validation_error)
    service.add_exception_handler(StarletteHTTPException, on_http_error)
    service.add_exception_handler(Exception, on_unexpected)
