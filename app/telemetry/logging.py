"""Structured logs: one JSON object per line, with the active trace and span ids.

Never log image bytes, API keys or URLs with credentials; log counts, codes and timings.
"""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from app.telemetry.tracing import trace_ids


def get_logger(name: str) -> logging.Logger:
    """A logger under the `phone_detector` hierarchy."""
    return logging.getLogger(f"phone_detector.{name.removeprefix('app.')}")


class _TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = trace_ids()
        return True


def configure_logging(level: str = "info", *, log_format: str = "json") -> None:
    """Send every log record to stderr as JSON (or plain text) at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceIdFilter())
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s trace=%(trace_id)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
