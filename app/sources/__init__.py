"""Camera sources: the service reads RTSP, HTTP and file video itself and detects on it."""

from app.sources.manager import SourceManager, SourceStatus
from app.sources.spec import SourceSpec, load_sources_file, mask_url

__all__ = ["SourceManager", "SourceSpec", "SourceStatus", "load_sources_file", "mask_url"]
