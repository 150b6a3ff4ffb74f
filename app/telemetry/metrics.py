"""The service's OpenTelemetry instruments and the Prometheus registry that exposes them.

Exported names are part of the public interface (dashboards and alert rules use them):
see the metrics table in the README; `tests/telemetry/test_metrics.py` pins them.
"""

import threading
from collections.abc import Iterable, Sequence

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

import app

# Dense around the SlowDetection threshold (1 s), down to single-frame model times.
LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
PHONES_PER_IMAGE_BUCKETS = (0, 1, 2, 3, 5, 10, 20)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32)
IMAGES_PER_REQUEST_BUCKETS = (1, 2, 4, 8, 16, 32)

METHODS = ("multipart", "base64", "render", "stream")
STATUSES = ("success", "error", "rejected", "timeout")
REJECT_REASONS = (
    "queue_full", "shutting_down", "deadline", "cancelled", "client_disconnected",
    "stream_dropped",
)  # fmt: skip
ERROR_REASONS = (
    "bad_image", "too_large", "unsupported_format", "invalid_request", "invalid_base64",
    "too_many_files", "no_images", "timeout", "model_error", "internal_error", "queue_full",
    "shutting_down", "not_ready",
)  # fmt: skip

SOURCE_STATES = ("connecting", "up", "backoff", "stopped")
# busy: a sampling tick found the source's previous frame still with the model; shed: a
# sampled frame found no room (background queue full, deadline passed behind requests).
SOURCE_SKIP_REASONS = ("busy", "shed")
WEBHOOK_OUTCOMES = ("delivered", "failed")

REGIONS = (
    "top_left", "top_center", "top_right",
    "middle_left", "center", "middle_right",
    "bottom_left", "bottom_center", "bottom_right",
)  # fmt: skip


class DetectionMetrics:
    """Owns a meter provider, a Prometheus registry and every instrument of the service.

    One instance per app; tests build their own and read `exposition()`.
    """

    def __init__(
        self,
        *,
        resource: Resource | None = None,
        extra_readers: Sequence[MetricReader] = (),
        max_sources: int = 32,
        sources_allowlist: Sequence[str] = (),
    ) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        prometheus_reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        self.provider = MeterProvider(
            metric_readers=[prometheus_reader, *extra_readers],
            resource=resource or Resource.create({"service.name": "phone-detector"}),
        )
        meter = self.provider.get_meter("app.telemetry", app.__version__)
        self._build_instruments(meter)
        self._max_sources = max_sources
        self._allowlist = frozenset(sources_allowlist)
        self._sources_seen: set[str] = set()
        self._sources_lock = threading.Lock()  # camera readers record from their threads
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        # Series that exist from the first scrape make rate() and ratio rules work before
        # the first error or shed request, instead of returning nothing.
        for method in METHODS:
            for status in STATUSES:
                self._requests.add(0, {"method": method, "status": status})
        for reason in REJECT_REASONS:
            self._rejected.add(0, {"reason": reason})
        for reason in ERROR_REASONS:
            self._errors.add(0, {"reason": reason})
        self._model_load.set(0)
        for state in ("opened", "closed"):
            self._presence_events.add(0, {"state": state})
        for outcome in WEBHOOK_OUTCOMES:
            self._webhooks.add(0, {"outcome": outcome})

    def _build_instruments(self, meter: Meter) -> None:
        self._requests = meter.create_counter(
            "phone_detection.requests", unit="{request}", description="Detection requests"
        )
        self._latency = meter.create_histogram(
            "phone_detection.latency",
            unit="s",
            description="End-to-end detection latency per request",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self._devices_current = meter.create_gauge(
            "phone_detection.devices.current",
            unit="{device}",
            description="Phones in the most recent image",
        )
        self._devices_per_image = meter.create_histogram(
            "phone_detection.devices.per_image",
            unit="{device}",
            description="Phones found per image",
            explicit_bucket_boundaries_advisory=PHONES_PER_IMAGE_BUCKETS,
        )
        self._model_load = meter.create_gauge(
            "phone_detection.model.load", description="1 when the model is loaded, else 0"
        )
        self._model_info = meter.create_gauge(
            "phone_detection.model.info", description="Always 1; labels describe the model"
        )
        self._queue_depth = meter.create_up_down_counter(
            "phone_detection.queue.depth", unit="{frame}", description="Frames waiting"
        )
        self._queue_capacity = meter.create_gauge(
            "phone_detection.queue.capacity", unit="{frame}", description="Queue size limit"
        )
        self._queue_wait = meter.create_histogram(
            "phone_detection.queue.wait.duration",
            unit="s",
            description="Time a frame waited in the queue before its batch ran",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self._batch_size = meter.create_histogram(
            "phone_detection.batch.size",
            unit="{frame}",
            description="Frames per model run",
            explicit_bucket_boundaries_advisory=BATCH_SIZE_BUCKETS,
        )
        self._batch_window = meter.create_gauge(
            "phone_detection.batch.window",
            unit="s",
            description="How long a lone frame would now be held for more to batch with",
        )
        self._inference = meter.create_histogram(
            "phone_detection.inference.duration",
            unit="s",
            description="Model time per batch",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self._images_per_request = meter.create_histogram(
            "phone_detection.images.per_request",
            unit="{image}",
            description="Images in one request",
            explicit_bucket_boundaries_advisory=IMAGES_PER_REQUEST_BUCKETS,
        )
        self._rejected = meter.create_counter(
            "phone_detection.frames.rejected",
            unit="{frame}",
            description="Frames shed or dropped before inference",
        )
        self._errors = meter.create_counter(
            "phone_detection.errors", unit="{error}", description="Failed requests by reason"
        )
        self._by_region = meter.create_counter(
            "phone_detection.devices.by_region",
            unit="{device}",
            description="Phones detected by 3x3 image region of the box centre",
        )
        self._presence_active = meter.create_gauge(
            "phone_detection.presence.active",
            description="1 while a phone-in-view event is open for the source, else 0",
        )
        self._presence_events = meter.create_counter(
            "phone_detection.presence.events",
            unit="{event}",
            description="Phone-presence events opened and closed",
        )
        self._by_source = meter.create_counter(
            "phone_detection.devices.by_source",
            unit="{device}",
            description="Phones detected by source (camera id); bounded label set",
        )
        self._build_source_instruments(meter)

    def _build_source_instruments(self, meter: Meter) -> None:
        self._source_up = meter.create_gauge(
            "phone_detection.source.up", description="1 while the camera source delivers frames"
        )
        self._source_state = meter.create_gauge(
            "phone_detection.source.state",
            description="1 for the camera source's current state, 0 for the others",
        )
        self._source_decoded = meter.create_counter(
            "phone_detection.source.frames.decoded",
            unit="{frame}",
            description="Frames decoded from the camera source",
        )
        self._source_sampled = meter.create_counter(
            "phone_detection.source.frames.sampled",
            unit="{frame}",
            description="Decoded frames sampled (at the source's fps) and sent to the model",
        )
        self._source_skipped = meter.create_counter(
            "phone_detection.source.frames.skipped",
            unit="{frame}",
            description="Sampling ticks that sent no frame because the model was busy",
        )
        self._source_decode_errors = meter.create_counter(
            "phone_detection.source.decode.errors",
            unit="{error}",
            description="Packets the decoder rejected",
        )
        self._source_reconnects = meter.create_counter(
            "phone_detection.source.reconnects",
            unit="{reconnect}",
            description="Connection attempts after a failure or a dropped stream",
        )
        self._source_frame_age = meter.create_histogram(
            "phone_detection.source.frame.age",
            unit="s",
            description="From a frame's decode to its detections (end-to-end staleness)",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self._webhooks = meter.create_counter(
            "phone_detection.source.webhook.deliveries",
            unit="{event}",
            description="Presence events posted to a source's webhook, by final outcome",
        )

    # -- recording -------------------------------------------------------------------------

    def record_request(self, *, method: str, status: str, seconds: float | None) -> None:
        """One finished request; latency is recorded only for requests that were processed."""
        self._requests.add(1, {"method": method, "status": status})
        if seconds is not None:
            self._latency.record(seconds, {"method": method})

    def record_error(self, reason: str) -> None:
        self._errors.add(1, {"reason": reason})

    def record_images(self, count: int) -> None:
        self._images_per_request.record(count)

    def record_phones(
        self, *, count: int, centres: Iterable[tuple[float, float]], source: str | None
    ) -> None:
        """Phones in one image; `centres` are box centres as fractions (0-1) of width/height."""
        self._devices_current.set(count)
        self._devices_per_image.record(count)
        for cx, cy in centres:
            self._by_region.add(1, {"region": region_of(cx, cy)})
        if source is not None and count:
            self._by_source.add(count, {"source": self._bounded_source(source)})

    def record_presence(self, *, source: str, state: str) -> None:
        """A presence event `state` ("opened"/"closed") for `source` (bounded label)."""
        label = self._bounded_source(source)
        self._presence_active.set(1 if state == "opened" else 0, {"source": label})
        self._presence_events.add(1, {"state": state})

    def record_model(
        self, *, loaded: bool, name: str, variant: str, synthetic: bool, provider: str
    ) -> None:
        self._model_load.set(1 if loaded else 0)
        attributes = {
            "model": name,
            "variant": variant,
            "synthetic": str(synthetic).lower(),
            "provider": provider,
        }
        self._model_info.set(1, attributes)

    def record_model_unloaded(self) -> None:
        self._model_load.set(0)

    def record_queue_capacity(self, frames: int) -> None:
        self._queue_capacity.set(frames)

    def record_queue_change(self, delta: int) -> None:
        self._queue_depth.add(delta)

    def record_queue_wait(self, seconds: float) -> None:
        self._queue_wait.record(seconds)

    def record_batch(self, *, size: int, seconds: float) -> None:
        self._batch_size.record(size)
        self._inference.record(seconds)

    def record_batch_window(self, seconds: float) -> None:
        self._batch_window.set(seconds)

    def record_rejected(self, reason: str, frames: int = 1) -> None:
        self._rejected.add(frames, {"reason": reason})

    # -- camera sources (thread-safe: readers record from their own threads) ---------------

    def record_source_added(self, *, source: str) -> None:
        """Start the source's counters at zero, so rate() works before its first fault."""
        attributes = {"source": self._bounded_source(source)}
        for counter in (
            self._source_decoded,
            self._source_sampled,
            self._source_decode_errors,
            self._source_reconnects,
        ):
            counter.add(0, attributes)
        for reason in SOURCE_SKIP_REASONS:
            self._source_skipped.add(0, {**attributes, "reason": reason})

    def record_source_state(self, *, source: str, state: str) -> None:
        """The source is now in `state` (one of SOURCE_STATES); `up` follows it."""
        label = self._bounded_source(source)
        self._source_up.set(1 if state == "up" else 0, {"source": label})
        for known in SOURCE_STATES:
            self._source_state.set(1 if known == state else 0, {"source": label, "state": known})

    def record_source_decoded(self, *, source: str, frames: int = 1) -> None:
        self._source_decoded.add(frames, {"source": self._bounded_source(source)})

    def record_source_sampled(self, *, source: str) -> None:
        self._source_sampled.add(1, {"source": self._bounded_source(source)})

    def record_source_skipped(self, *, source: str, reason: str, frames: int = 1) -> None:
        """`frames` sampling ticks that sent nothing, for `reason` (SOURCE_SKIP_REASONS)."""
        if frames > 0:
            self._source_skipped.add(
                frames, {"source": self._bounded_source(source), "reason": reason}
            )

    def record_source_decode_error(self, *, source: str) -> None:
        self._source_decode_errors.add(1, {"source": self._bounded_source(source)})

    def record_source_reconnect(self, *, source: str) -> None:
        self._source_reconnects.add(1, {"source": self._bounded_source(source)})

    def record_source_frame_age(self, *, source: str, seconds: float) -> None:
        self._source_frame_age.record(seconds, {"source": self._bounded_source(source)})

    def record_webhook(self, *, outcome: str) -> None:
        """A presence event's webhook delivery ended `delivered` or `failed` (after retries)."""
        self._webhooks.add(1, {"outcome": outcome})

    # -- export ----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every instrument and the process metrics."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()

    def _bounded_source(self, source: str) -> str:
        # With an allow-list only listed ids get a series; without one the first
        # `max_sources` distinct ids do. Everything else shares "other", so a client sending
        # random ids cannot grow the series count without bound.
        if self._allowlist:
            return source if source in self._allowlist else "other"
        with self._sources_lock:
            if source in self._sources_seen:
                return source
            if len(self._sources_seen) < self._max_sources:
                self._sources_seen.add(source)
                return source
        return "other"


def region_of(cx: float, cy: float) -> str:
    """The 3x3 grid cell name of a point given as fractions of the image width and height."""
    column = min(2, max(0, int(cx * 3)))
    row = min(2, max(0, int(cy * 3)))
    return REGIONS[row * 3 + column]
