"""Service settings, read once from `PHONE_DET_*` environment variables and an optional `.env`."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "phone-detector"


class Settings(BaseSettings):
    """Every tunable of the service; bad values fail at start-up, not on the first request."""

    model_config = SettingsConfigDict(
        env_prefix="PHONE_DET_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        protected_namespaces=(),
    )

    # Model
    model_path: Path | None = Field(
        None, description="ONNX file to serve; unset: model cache, then fetch, then synthetic build"
    )
    model_name: str = Field(
        "damoyolo_tinynasL25_S_460", description="Official model to fetch when none is configured"
    )
    model_cache_dir: Path = Field(default_factory=_default_cache_dir)
    labels_path: Path | None = Field(None, description="Text file, one class name per line")
    phone_classes: list[str] = Field(
        default_factory=list,
        description="Class names counted as a phone; empty: COCO 'cell phone' or a one-class model",
    )
    synthetic_variant: str = Field("S", pattern="^[NTSM]$")
    synthetic_seed: int = Field(0, ge=0)
    allow_fetch: bool = Field(True, description="Try to download the official model at start")

    # Detection defaults (each can be overridden per request)
    score_threshold: float = Field(0.35, ge=0.0, le=1.0)
    iou_threshold: float = Field(0.45, ge=0.0, le=1.0)
    max_detections: int = Field(100, ge=1, le=1000)

    # Batching and runtime
    # 2: on a 2-core CPU batching past 2 frames gains nothing (S: 530 ms/image at 1, 2, 4 and
    # 8) while the onnxruntime arena grows ~100 MB per extra frame (S at 8: ~900 MB RSS).
    max_batch_size: int = Field(2, ge=1, le=256)
    # adaptive: hold a non-full batch only as long as the measured batch cost and arrival rate
    # say it pays (never, on a CPU where batching gains nothing); fixed: always MAX_WAIT_MS.
    batch_window: Literal["adaptive", "fixed"] = "adaptive"
    max_wait_ms: float = Field(20.0, ge=0.0, le=1000.0)  # the fixed window, or adaptive's cap
    queue_size: int = Field(64, ge=1)
    deadline_ms: float = Field(10_000.0, gt=0.0)
    intra_op_threads: int = Field(2, ge=1)
    # 128: S at K=64 peaks at 413 MB instead of 485 (1024: 443), same throughput; N saves
    # ~10 MB and may lose 2-3 % (page faults on its smaller buffers), within this VM's noise.
    malloc_mmap_threshold_kb: int = Field(
        128,
        ge=0,
        le=32 * 1024,
        description="glibc: buffers this large are mapped and unmapped when freed, so RSS "
        "falls back after a burst; 0 keeps glibc's adaptive default",
    )
    drain_timeout_s: float = Field(30.0, gt=0.0)

    # Input limits
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_files_per_request: int = Field(16, ge=1)
    max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Whole request body; larger is refused unread"
    )

    # Live stream
    stream_max_pending: int = Field(
        2, ge=1, le=64, description="Frames a stream may hold; older ones are dropped"
    )

    # Camera sources (the server reads RTSP/HTTP/file video itself)
    sources_file: Path | None = Field(
        None, description="YAML file with a `sources:` list of {id, url, fps, roi, labels}"
    )
    media_dir: Path | None = Field(
        None, description="Folder whose video files /v1/sources may name; unset: none"
    )
    max_camera_sources: int = Field(32, ge=0, description="Camera sources read at once")
    source_batch_slots: int = Field(
        2, ge=1, description="Camera frames per model batch, after every waiting request"
    )
    source_open_timeout_s: float = Field(10.0, gt=0.0, description="Connect/open time limit")
    source_stall_timeout_s: float = Field(
        10.0, gt=0.0, description="No frame for this long: the stream has stalled, reconnect"
    )
    source_backoff_initial_s: float = Field(0.5, gt=0.0, description="First retry delay")
    source_backoff_max_s: float = Field(30.0, gt=0.0, description="Retry delay cap")
    source_webhook_attempts: int = Field(4, ge=1, description="Tries per presence webhook")
    source_webhook_timeout_s: float = Field(5.0, gt=0.0, description="Per webhook try")

    # Phone-presence events (per source)
    presence_min_hits: int = Field(3, ge=1, description="Frames with a phone needed to open")
    presence_window: int = Field(5, ge=1, description="... out of this many recent frames")
    presence_clear_after_s: float = Field(5.0, ge=0.0, description="No phone this long closes")

    # Telemetry
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Also serve /metrics on this port (unset: app port only)"
    )
    max_sources: int = Field(32, ge=0, description="Distinct source ids with their own series")
    sources_allowlist: list[str] = Field(
        default_factory=list, description="If set, only these source ids get their own series"
    )
    log_format: str = Field("json", pattern="^(json|text)$")

    # Security
    api_keys: list[str] = Field(
        default_factory=list, description="Accepted API keys (JSON list); empty: auth off"
    )
    api_keys_file: Path | None = Field(None, description="File of API keys, one per line")
    auth_metrics: bool = Field(False, description="Require a key for /metrics too")
    auth_health: bool = Field(False, description="Require a key for /healthz and /readyz too")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (JSON list); empty: CORS off"
    )

    # Server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")

    def resolved_api_keys(self) -> list[str]:
        """Keys from `api_keys` and `api_keys_file` (blank lines and # comments ignored)."""
        keys = [key for key in self.api_keys if key]
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
