"""What a camera source is: its definition (id, url, fps, roi, labels, webhook), where its URL
may point, and how the definitions are read from the YAML sources file."""

import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import InvalidSourceError

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})

# FFmpeg protocols each kind of URL may use, so a URL (or a server's redirect) can never
# reach a local file or a protocol such as `concat:` or `subfile:` through FFmpeg.
_PROTOCOLS = {
    "rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
    "rtsps": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
    "http": "http,https,tcp,tls,crypto",
    "https": "http,https,tcp,tls,crypto",
    "file": "file",
}

# Query parameters whose values are secrets by convention (camera tokens, signed URLs).
_SECRET_PARAMS = re.compile(r"(pass|pwd|token|key|secret|auth|sig|credential)", re.IGNORECASE)
_MASK = "***"

SourceOrigin = Literal["config", "api"]


class SourceSpec(BaseModel):
    """One camera source as configured (YAML entry or POST /v1/sources body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        examples=["hall-a-cam-3"],
    )
    url: str = Field(
        min_length=1,
        max_length=2000,
        description="rtsp://, rtsps://, http(s):// (MJPEG or video), or a video file: any "
        "path in the sources file; through the API, a name inside PHONE_DET_MEDIA_DIR",
        examples=["rtsp://user:secret@10.0.0.21:554/stream1"],
    )
    fps: float = Field(2.0, gt=0.0, le=60.0, description="Frames sampled per second")
    roi: tuple[float, float, float, float] | None = Field(
        None,
        description="Crop [x1, y1, x2, y2] as fractions (0-1) of the frame; boxes are "
        "still reported in whole-frame pixels",
        examples=[[0.0, 0.25, 1.0, 1.0]],
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Free-form metadata, returned as given",
        examples=[{"hall": "A", "row": "3-5"}],
    )
    webhook: str | None = Field(
        None,
        max_length=2000,
        description="http(s) URL that gets each presence event as JSON (with retries)",
    )

    @field_validator("roi")
    @classmethod
    def _roi_inside_frame(
        cls, roi: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if roi is None:
            return None
        x1, y1, x2, y2 = roi
        if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
            raise ValueError("roi must be [x1, y1, x2, y2] with 0 <= x1 < x2 <= 1, same for y")
        return roi

    @field_validator("webhook")
    @classmethod
    def _webhook_is_http(cls, webhook: str | None) -> str | None:
        if webhook is not None and urllib.parse.urlsplit(webhook).scheme not in ("http", "https"):
            raise ValueError("webhook must be an http:// or https:// URL")
        return webhook


class ResolvedUrl(BaseModel):
    """Where a reader opens a source: the FFmpeg URL, its protocol allow-list, and whether
    it is a file (read at its own frame rate and looped)."""

    model_config = ConfigDict(frozen=True)

    target: str
    protocols: str
    is_file: bool


def resolve_url(
    url: str, *, origin: SourceOrigin, media_dir: Path | None, base_dir: Path | None = None
) -> ResolvedUrl:
    """Check `url` against the rules for `origin` and say how to open it.

    Network URLs (rtsp, rtsps, http, https) are allowed from anywhere. Files: from the
    sources file, any path (`file://` or a path; relative to `base_dir`); from the API, only
    a relative name of an existing file inside `media_dir`, so no request chooses a path on
    the server. Raises InvalidSourceError with a message safe to show (no credentials).
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in NETWORK_SCHEMES:
        if not urllib.parse.urlsplit(url).hostname:
            raise InvalidSourceError(f"{mask_url(url)} has no host")
        return ResolvedUrl(target=url, protocols=_PROTOCOLS[scheme], is_file=False)
    if origin == "api":
        return ResolvedUrl(target=_media_file(url, media_dir), protocols="file", is_file=True)
    if scheme == "file":
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    elif scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise InvalidSourceError(
            f"unsupported URL scheme {scheme!r}; use rtsp, rtsps, http, https or a file path"
        )
    else:
        path = Path(url)
        if not path.is_absolute():
            path = (media_dir or base_dir or Path.cwd()) / path
    # "file:" makes FFmpeg read the path as a plain file, whatever characters it contains.
    return ResolvedUrl(target=f"file:{path}", protocols="file", is_file=True)


def _media_file(name: str, media_dir: Path | None) -> str:
    if media_dir is None:
        raise InvalidSourceError(
            "file sources can be added at run time only from PHONE_DET_MEDIA_DIR, which is "
            "not set; use an rtsp:// or http(s):// URL"
        )
    if "://" in name or name.startswith(("/", "\\", "file:")) or ":" in name:
        raise InvalidSourceError(
            "a file source added through the API must be a file name inside the media "
            "folder, not a path or file:// URL"
        )
    root = media_dir.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise InvalidSourceError("a file source must be inside the media folder")
    if not path.is_file():
        raise InvalidSourceError(f"no file {name!r} in the media folder")
    return f"file:{path}"


def mask_url(url: str) -> str:
    """`url` with any user name and password, and secret-looking query values, replaced by
    `***`; safe to log and return. File paths come back unchanged."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return _MASK
    if parts.scheme.lower() not in NETWORK_SCHEMES:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = urllib.parse.urlencode(
            [(k, _MASK if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*"
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def load_sources_file(path: Path) -> list[SourceSpec]:
    """The `sources:` list of a YAML file; raises InvalidSourceError saying what is wrong
    (bad YAML, a malformed entry, a repeated id). URLs are checked by `resolve_url` when the
    SourceManager registers each entry, at start-up."""
    try:
        document: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidSourceError(f"cannot read sources file {path}: {exc}") from exc
    if document is None:
        return []
    entries = document.get("sources") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidSourceError(f"{path}: expected a top-level `sources:` list")
    specs: list[SourceSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        try:
            spec = SourceSpec.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidSourceError(f"{path}: sources[{index}]: {problems}") from None
        if spec.id in seen:
            raise InvalidSourceError(f"{path}: source id {spec.id!r} appears twice")
        seen.add(spec.id)
        specs.append(spec)
    return specs
