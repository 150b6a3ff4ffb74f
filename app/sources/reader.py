"""SourceReader: one thread that keeps a camera source open with PyAV, decodes it, and holds
only the newest frame, reconnecting with capped exponential backoff when it fails."""

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import av.container

from app.sources.spec import ResolvedUrl
from app.telemetry.logging import get_logger
from app.telemetry.metrics import DetectionMetrics

logger = get_logger(__name__)

# A burst of undecodable packets is normal after packet loss; this many in a row without
# one good frame means the stream is unusable, so it is reopened.
_MAX_CONSECUTIVE_DECODE_ERRORS = 50


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """The newest frame of a source: `seq` counts decoded frames, `decoded_at` is monotonic."""

    frame: av.VideoFrame
    seq: int
    decoded_at: float


class Backoff:
    """Capped exponential delays with jitter: the n-th delay is drawn from
    [d/2, d] with d = min(max_s, initial_s * 2**n), so many cameras behind one failed switch
    do not all reconnect in the same instant."""

    def __init__(
        self, *, initial_s: float, max_s: float, rng: Callable[[], float] = random.random
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng
        self._failures = 0

    def next_delay_s(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(self._failures, 30))
        self._failures += 1
        return ceiling / 2.0 + self._rng() * ceiling / 2.0

    def reset(self) -> None:
        self._failures = 0


class SourceFaultError(Exception):
    """Why a connection ended; `message` is safe to show (it never contains the URL)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SourceReader:
    """Reads one source on a daemon thread; `latest()` is the newest decoded frame.

    States: connecting -> up (first frame) -> backoff (after a fault, for the backoff delay)
    -> connecting ... and stopped once `stop()` is called. A file source is paced at its own
    frame rate and starts over at its end instead of failing.
    """

    def __init__(
        self,
        source_id: str,
        resolved: ResolvedUrl,
        *,
        metrics: DetectionMetrics,
        open_timeout_s: float,
        stall_timeout_s: float,
        backoff: Backoff,
    ) -> None:
        self.source_id = source_id
        self._resolved = resolved
        self._metrics = metrics
        self._open_timeout_s = open_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._backoff = backoff
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: DecodedFrame | None = None
        self._thread: threading.Thread | None = None
        self.state = "stopped"
        self.state_since = time.time()
        self.last_error: str | None = None
        self.frames_decoded = 0
        self.decode_errors = 0
        self.reconnects = 0
        self._session_frames = 0  # frames delivered since the last (re)connect

    def start(self) -> None:
        """Start reading on a new daemon thread (it never blocks the caller)."""
        if self._thread is not None:
            raise RuntimeError("SourceReader already started")
        self._set_state("connecting")
        self._thread = threading.Thread(
            target=self._run, name=f"source-{self.source_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does within one read timeout. Drops the last frame."""
        self._stop.set()
        with self._lock:
            self._latest = None
        self._set_state("stopped")

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread to end; False if it still runs after `timeout_s`."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def latest(self) -> DecodedFrame | None:
        with self._lock:
            return self._latest

    # -- the reading thread ---------------------------------------------------------------

    def _run(self) -> None:
        failed_before = False
        while not self._stop.is_set():
            if failed_before:
                self.reconnects += 1
                self._metrics.record_source_reconnect(source=self.source_id)
            self._set_state("connecting")
            self._session_frames = 0
            try:
                self._read_until_fault()
                error = "stream ended"
            except SourceFaultError as fault:
                error = fault.message
            except Exception as exc:  # a PyAV or FFmpeg surprise must not kill the reader
                error = f"unexpected {type(exc).__name__} while reading"
                logger.exception("source %s: unexpected reader error", self.source_id)
            if self._stop.is_set():
                break
            failed_before = True
            with self._lock:
                self._latest = None  # never hand out a frame from a dead connection
            if self._session_frames:
                # It worked until now: start the delays over rather than wait long at once.
                self._backoff.reset()
            delay_s = self._backoff.next_delay_s()
            self.last_error = error
            self._set_state("backoff")
            logger.warning("source %s: %s; retrying in %.1f s", self.source_id, error, delay_s)
            self._stop.wait(delay_s)
        self._set_state("stopped")

    def _read_until_fault(self) -> None:
        """Read until the stream fails (raises SourceFaultError) or the reader stops; a file
        that ends is reopened here (replay), not failed."""
        while not self._stop.is_set():
            try:
                container = self._open()
            except (av.FFmpegError, OSError) as exc:
                message = _describe(exc, opening=True, timeout_s=self._open_timeout_s)
                raise SourceFaultError(message) from None
            try:
                with container:
                    self._decode(container)
            except (av.FFmpegError, OSError) as exc:
                message = _describe(exc, opening=False, timeout_s=self._stall_timeout_s)
                raise SourceFaultError(message) from None
            if not self._resolved.is_file:
                raise SourceFaultError("stream ended")
            if not self._session_frames:
                raise SourceFaultError("not a video: the file has no decodable frame")

    def _open(self) -> av.container.InputContainer:
        options = {"protocol_whitelist": self._resolved.protocols}
        if self._resolved.target.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"  # UDP loses whole frames on busy networks
        return av.open(
            self._resolved.target,
            mode="r",
            options=options,
            timeout=(self._open_timeout_s, self._stall_timeout_s),
        )

    def _decode(self, container: av.container.InputContainer) -> None:
        if not container.streams.video:
            raise SourceFaultError("not a video: the source has no video stream")
        stream = container.streams.video[0]
        paced_from: tuple[float, float] | None = None  # (wall clock, media time) at start
        last_frame_at = time.monotonic()
        consecutive_errors = 0
        for packet in container.demux(stream):
            if self._stop.is_set():
                return
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.decode_errors += 1
                self._metrics.record_source_decode_error(source=self.source_id)
                consecutive_errors += 1
                if consecutive_errors >= _MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise SourceFaultError(
                        f"{consecutive_errors} packets in a row could not be decoded"
                    ) from None
                continue
            for frame in frames:
                consecutive_errors = 0
                if self._resolved.is_file:
                    paced_from = self._pace(frame, paced_from)
                    if self._stop.is_set():
                        return
                self._publish(frame)
                last_frame_at = time.monotonic()
            if time.monotonic() - last_frame_at > self._stall_timeout_s:
                raise SourceFaultError(
                    f"stalled: data but no decodable frame for {self._stall_timeout_s:g} s"
                )

    def _pace(
        self, frame: av.VideoFrame, paced_from: tuple[float, float] | None
    ) -> tuple[float, float]:
        # Replay at the file's own speed: decoding flat out would burn the CPU the model
        # needs and make a file behave nothing like the camera it stands for.
        media_s = frame.time
        if media_s is None:
            return paced_from or (time.monotonic(), 0.0)
        if paced_from is None or media_s < paced_from[1]:
            return (time.monotonic(), media_s)
        due = paced_from[0] + (media_s - paced_from[1])
        wait_s = due - time.monotonic()
        if wait_s > 0:
            self._stop.wait(wait_s)
        return paced_from

    def _publish(self, frame: av.VideoFrame) -> None:
        with self._lock:
            self.frames_decoded += 1
            self._session_frames += 1
            self._latest = DecodedFrame(frame, self.frames_decoded, time.monotonic())
        self._metrics.record_source_decoded(source=self.source_id)
        if self.state != "up":
            self.last_error = None
            self._set_state("up")

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        if self._stop.is_set() and state != "stopped":
            return  # stop() won: a late thread transition must not revive the source
        self.state = state
        self.state_since = time.time()
        self._metrics.record_source_state(source=self.source_id, state=state)


def _describe(exc: BaseException, *, opening: bool, timeout_s: float) -> str:
    """A short reason for the fault, without the URL (FFmpeg errors repeat it, with any
    credentials in it, in their str())."""
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    if isinstance(exc, av.ExitError):
        if opening:
            return f"cannot connect: no answer within {timeout_s:g} s"
        return f"stalled: no data for {timeout_s:g} s"
    if isinstance(exc, av.InvalidDataError):
        return f"not a video: FFmpeg cannot read it as media ({reason})"
    if isinstance(exc, FileNotFoundError):
        return "cannot open: no such file"
    if isinstance(exc, av.FFmpegError) and opening:
        return f"cannot open: {reason}"
    if isinstance(exc, OSError) and opening:
        return f"cannot connect: {reason}"
    return f"read failed: {reason}"
