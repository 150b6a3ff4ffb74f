"""MicroBatcher: a bounded asyncio queue of frames, formed into batches for one model.

Callers `await submit(frame)`; one background task takes up to `max_batch_size` queued
frames, runs them together in the batcher's own thread pool and resolves each caller's
future. A batch that is not full waits for more frames only as long as its batch window
says (`batch_window`: fixed, or adaptive); under load, batches fill with what queued while
the model was busy. Knows nothing about images.

Frames have a priority. Interactive frames (requests) go first; background frames (camera
sources) wait in their own short queue, fill at most `background_slots` places of a batch
after every waiting interactive frame, and never count against `queue_size`, so a camera
load can delay a request by one small batch at most and never makes it shed.

Admission looks ahead. Given `admit_within_s` (the service's deadline), an interactive frame is
refused at once, like a full queue, when the frames ahead of it (running and waiting) would
take longer than that at the measured model time per frame: under overload a quick 503 the
client can retry elsewhere beats a place in a queue that ends in a 504 after the deadline.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, Tracer

from app.errors import (
    DeadlineExceededError,
    InferenceFailedError,
    QueueFullError,
    ShuttingDownError,
)
from app.inference.batch_window import WindowMode, make_window
from app.telemetry.logging import get_logger
from app.telemetry.metrics import DetectionMetrics

RunBatch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

logger = get_logger(__name__)

_ALPHA = 0.2  # EWMA weight of the newest batch's time per frame
# Admit only what is expected within this share of the deadline: the estimate is a mean and
# decode, postprocessing and the answer come on top.
_DEADLINE_HEADROOM = 0.8


class Priority(Enum):
    """Which queue a frame waits in; see the module docstring."""

    INTERACTIVE = "interactive"
    BACKGROUND = "background"


@dataclass(frozen=True, slots=True)
class FrameOutput:
    """One frame's model outputs and where its time went."""

    scores: np.ndarray  # [N, C]
    boxes: np.ndarray  # [N, 4]
    queue_s: float  # from submit to the start of its batch
    inference_s: float  # the whole batch's model time
    batch_size: int
    batch_span: SpanContext | None = None  # the batch's span, for a link from the request


@dataclass(slots=True)
class _QueuedFrame:
    tensor: np.ndarray
    future: "asyncio.Future[FrameOutput]"
    deadline_at: float  # time.monotonic() after which nobody wants the answer
    span_context: SpanContext  # the submitting request's span, linked from the batch span
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float = 0.0
    priority: Priority = Priority.INTERACTIVE
    waited_before_s: float = 0.0  # queued before submit, e.g. for a decode slot


class MicroBatcher:
    """Batches frames for `run_batch` ([B, ...] -> two [B, ...] arrays), one batch at a time."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        queue_size: int,
        metrics: DetectionMetrics,
        tracer: Tracer | None = None,
        retry_after_s: float = 1.0,
        background_slots: int = 1,
        background_queue_size: int = 64,
        window_mode: WindowMode = "fixed",
        admit_within_s: float | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if background_slots < 1 or background_queue_size < 1:
            raise ValueError("background_slots and background_queue_size must be >= 1")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.window = make_window(window_mode, max_wait_ms)
        self.queue_size = queue_size
        self._metrics = metrics
        self._tracer = tracer or trace.NoOpTracer()
        self._retry_after_s = retry_after_s
        self._admit_within_s = admit_within_s
        self.background_slots = min(background_slots, max_batch_size)
        self.background_queue_size = background_queue_size
        self._queue: deque[_QueuedFrame] = deque()
        # Background frames are not in queue_depth's metric: it measures what requests wait
        # on, and the autoscaler reads it.
        self._background: deque[_QueuedFrame] = deque()
        self._reserved = 0  # interactive frames admitted by `reserve`, not yet submitted
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = False
        self._task: asyncio.Task[None] | None = None
        # One worker: onnxruntime already spreads one batch over its intra-op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.batches_run = 0
        self.largest_batch = 0
        self._seconds_per_frame: float | None = None  # EWMA of batch time / batch size
        self._running = 0  # interactive frames in the batch now running
        self._model_free_since = 0.0  # time.monotonic() when the last batch finished

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self._accepting

    @property
    def queue_depth(self) -> int:
        """Interactive frames waiting: queued, or reserved and not yet submitted (background
        frames are in `background_depth`)."""
        return len(self._queue) + self._reserved

    @property
    def seconds_per_frame(self) -> float | None:
        """Recent model time per frame (EWMA over batches; None before any batch)."""
        return self._seconds_per_frame

    def expected_wait_s(self, frames: int = 1) -> float | None:
        """Roughly how long `frames` more interactive frames would take to be answered, all
        frames running and waiting ahead of them first (None before any batch ran)."""
        if self._seconds_per_frame is None:
            return None
        return (self._running + self.queue_depth + frames) * self._seconds_per_frame

    def has_room(self, frames: int = 1) -> bool:
        """Whether `frames` more interactive frames would be admitted now (nothing counted)."""
        if self.queue_depth + frames > self.queue_size:
            return False
        ahead = self._running + self.queue_depth
        within = self._frames_within_deadline()
        # Nothing ahead: a model slower than the deadline is not "full".
        return within is None or ahead == 0 or ahead + frames <= within

    @property
    def capacity(self) -> int:
        """Frames that may be running and waiting at once: `queue_size`, or fewer where the
        deadline allows fewer at the measured model time (what the capacity gauge shows, so
        depth / capacity still says how close the service is to shedding)."""
        within = self._frames_within_deadline()
        return self.queue_size if within is None else max(1, min(self.queue_size, within))

    def _frames_within_deadline(self) -> int | None:
        """How many frames the model gets through in the admitted share of the deadline
        (None: no deadline to admit by, or no batch measured yet)."""
        if self._admit_within_s is None or self._seconds_per_frame is None:
            return None
        return int(self._admit_within_s * _DEADLINE_HEADROOM / self._seconds_per_frame)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Learn from one batch's model time (also fed the timed warm-up runs)."""
        per_frame = seconds / size
        previous = self._seconds_per_frame
        self._seconds_per_frame = (
            per_frame if previous is None else previous + _ALPHA * (per_frame - previous)
        )
        self.window.observe_batch(size, seconds)
        self._metrics.record_queue_capacity(self.capacity)

    @property
    def background_depth(self) -> int:
        return len(self._background)

    def start(self) -> None:
        """Start the batch loop on the running event loop."""
        if self._task is not None:
            raise RuntimeError("MicroBatcher already started")
        self._accepting = True
        self._metrics.record_queue_capacity(self.capacity)
        self._metrics.record_batch_window(self.window.window_s(1))
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    def stop_accepting(self) -> None:
        """New submits fail with ShuttingDownError from now on; queued work still runs."""
        self._accepting = False

    async def stop(self, *, drain_timeout_s: float) -> None:
        """Stop accepting, answer what is queued or running (up to the timeout), then stop."""
        self.stop_accepting()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), drain_timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for frame in self._queue:
            if not frame.future.done():
                frame.future.set_exception(
                    ShuttingDownError("service stopped before this frame ran")
                )
        self._metrics.record_queue_change(-len(self._queue))
        self._queue.clear()
        for frame in self._background:
            if not frame.future.done():
                frame.future.set_exception(
                    ShuttingDownError("service stopped before this frame ran")
                )
        self._background.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self,
        tensor: np.ndarray,
        *,
        deadline_s: float,
        priority: Priority = Priority.INTERACTIVE,
        reserved: bool = False,
        waited_before_s: float = 0.0,
    ) -> FrameOutput:
        """Queue one frame and wait for its outputs.

        Raises QueueFullError at once when `queue_size` frames are waiting, ShuttingDownError
        while draining, DeadlineExceededError after `deadline_s`, InferenceFailedError when
        its batch failed. Cancelling the caller drops the frame if it has not run yet.

        `reserved`: the frame uses one of the caller's `reserve`d places, whatever the
        outcome, so it is never refused for lack of room (only while draining).
        `waited_before_s`: how long the frame already waited for its turn before submit; it
        counts in the queue-wait metric, which measures what callers experience.

        A BACKGROUND frame waits in its own queue (bounded by `background_queue_size`) and
        its refusals and drops are left to the caller to count.
        """
        background = priority is Priority.BACKGROUND
        if background:
            self._check_background_capacity()
        elif reserved:
            self.release_reserved(1)  # the frame takes its place in the queue just below
            if not self._accepting:
                self._metrics.record_rejected("shutting_down")
                raise ShuttingDownError(
                    "service is shutting down", retry_after_s=self._retry_after_s
                )
        else:
            self.check_capacity()
        loop = asyncio.get_running_loop()
        frame = _QueuedFrame(
            tensor,
            loop.create_future(),
            time.monotonic() + deadline_s,
            trace.get_current_span().get_span_context(),
            priority=priority,
            waited_before_s=waited_before_s,
        )
        if background:
            self._background.append(frame)
        else:
            self._queue.append(frame)
            self._metrics.record_queue_change(1)
            self.window.observe_arrival(frame.queued_at)
        self._idle.clear()
        self._arrived.set()
        try:
            # No shield: a caller that times out or is cancelled cancels the frame's future
            # at once; the frame also leaves the queue at once, so it holds no slot.
            return await asyncio.wait_for(frame.future, deadline_s)
        except TimeoutError:
            if self._withdraw(frame) and not background:
                self._metrics.record_rejected("deadline")
            raise DeadlineExceededError(
                f"no answer within the {deadline_s * 1000:.0f} ms deadline"
            ) from None
        except asyncio.CancelledError:
            # The caller counts why it gave up (e.g. client_disconnected); count it once.
            self._withdraw(frame)
            raise

    def check_capacity(self) -> None:
        """Raise at once what `submit` would raise for lack of room, before any work is spent.

        ShuttingDownError while draining, QueueFullError when `queue_size` frames wait; each
        refusal is counted under its reason.
        """
        if not self._accepting:
            self._metrics.record_rejected("shutting_down")
            raise ShuttingDownError("service is shutting down", retry_after_s=self._retry_after_s)
        if self.has_room():
            return
        self._metrics.record_rejected("queue_full")
        if self.queue_depth >= self.queue_size:
            message = f"queue is full ({self.queue_size} frames); retry later"
        else:
            message = (
                f"queue is full: the {self.queue_depth} frames waiting would take about "
                f"{self.expected_wait_s() or 0.0:.1f} s, past what the "
                f"{self._admit_within_s or 0.0:.1f} s deadline allows; retry later"
            )
        raise QueueFullError(message, retry_after_s=self._retry_after_s)

    def reserve(self, frames: int) -> None:
        """Admit `frames` interactive frames now and submit them later (`reserved=True`).

        Refuses as `check_capacity` does. Until submitted or released, they count against
        `queue_size` and in `queue_depth`, as if queued, so work held back before the queue
        (e.g. images waiting to be decoded) keeps the bound and the autoscaler's signal.
        """
        self.check_capacity()
        self._reserved += frames
        self._metrics.record_queue_change(frames)

    def release_reserved(self, frames: int, *, reason: str | None = None) -> None:
        """Give back `frames` reserved places that will not be submitted; a `reason` counts
        them as frames rejected before inference (the caller counts its own otherwise)."""
        if frames <= 0:
            return
        if frames > self._reserved:
            raise RuntimeError(f"releasing {frames} reserved frames; only {self._reserved} are")
        self._reserved -= frames
        self._metrics.record_queue_change(-frames)
        if reason is not None:
            self._metrics.record_rejected(reason, frames)

    def _check_background_capacity(self) -> None:
        if not self._accepting:
            raise ShuttingDownError("service is shutting down", retry_after_s=self._retry_after_s)
        if len(self._background) >= self.background_queue_size:
            raise QueueFullError(
                f"background queue is full ({self.background_queue_size} frames)",
                retry_after_s=self._retry_after_s,
            )

    def _withdraw(self, frame: _QueuedFrame) -> bool:
        """Take a still-queued frame out of its queue; False if a batch already took it."""
        if frame.priority is Priority.BACKGROUND:
            try:
                self._background.remove(frame)
            except ValueError:
                return False
            return True
        try:
            self._queue.remove(frame)
        except ValueError:
            return False
        self._metrics.record_queue_change(-1)
        return True

    async def _drained(self) -> None:
        while self._queue or self._background or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._run(batch)
                self._model_free_since = time.monotonic()
            if not self._queue and not self._background:
                self._idle.set()

    async def _next_batch(self) -> list[_QueuedFrame]:
        """Returns 0..max_batch_size live frames; waits until at least one frame arrives.

        Interactive frames first, then at most `background_slots` background frames.
        """
        while not self._queue and not self._background:
            self._arrived.clear()
            await self._arrived.wait()
        # Interactive frames may be held for company (see batch_window); camera frames never.
        while self._queue and len(self._queue) < self.max_batch_size:
            oldest_at = self._queue[0].queued_at
            remaining = self.window.remaining_s(
                queued=len(self._queue),
                oldest_at=oldest_at,
                newest_at=self._queue[-1].queued_at,
                held_since=max(oldest_at, self._model_free_since),
                now=time.monotonic(),
            )
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        batch: list[_QueuedFrame] = []
        now = time.monotonic()
        while self._queue and len(batch) < self.max_batch_size:
            frame = self._queue.popleft()
            self._metrics.record_queue_change(-1)
            if frame.future.done():
                self._metrics.record_rejected("cancelled")
                continue
            if now >= frame.deadline_at:
                self._metrics.record_rejected("deadline")
                frame.future.cancel()
                continue
            frame.started_at = now
            self._metrics.record_queue_wait(now - frame.queued_at + frame.waited_before_s)
            batch.append(frame)
        background_room = min(self.background_slots, self.max_batch_size - len(batch))
        taken = 0
        while self._background and taken < background_room:
            frame = self._background.popleft()
            if frame.future.done():
                continue
            if now >= frame.deadline_at:
                frame.future.set_exception(
                    DeadlineExceededError("background frame waited past its deadline")
                )
                continue
            frame.started_at = now
            batch.append(frame)
            taken += 1
        return batch

    async def _run(self, batch: list[_QueuedFrame]) -> None:
        loop = asyncio.get_running_loop()
        span = self._tracer.start_span(
            "inference_batch",
            links=[Link(f.span_context) for f in batch if f.span_context.is_valid],
            attributes={"batch.size": len(batch)},
        )
        started = time.perf_counter()
        self._running = sum(f.priority is Priority.INTERACTIVE for f in batch)
        try:
            stacked = np.stack([frame.tensor for frame in batch])
            scores, boxes = await loop.run_in_executor(self._executor, self._run_batch, stacked)
            if scores.shape[0] != len(batch) or boxes.shape[0] != len(batch):
                raise InferenceFailedError(
                    f"model returned {scores.shape[0]} results for {len(batch)} frames"
                )
        except Exception as exc:
            failure = (
                exc if isinstance(exc, InferenceFailedError) else InferenceFailedError(str(exc))
            )
            logger.error("batch of %d failed: %r", len(batch), exc)
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR)
            span.end()
            for frame in batch:
                if not frame.future.done():
                    frame.future.set_exception(failure)
            return
        finally:
            self._running = 0
        span.end()
        inference_s = time.perf_counter() - started
        self._metrics.record_batch(size=len(batch), seconds=inference_s)
        self.observe_batch(len(batch), inference_s)
        self._metrics.record_batch_window(self.window.window_s(1))
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        for i, frame in enumerate(batch):
            if not frame.future.done():
                output = FrameOutput(
                    scores=scores[i],
                    boxes=boxes[i],
                    queue_s=frame.started_at - frame.queued_at,
                    inference_s=inference_s,
                    batch_size=len(batch),
                    batch_span=span.get_span_context(),
                )
                frame.future.set_result(output)
