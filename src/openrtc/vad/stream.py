"""A VAD stream served by the shared batcher: a drop-in `livekit.agents.vad.VADStream`.

The stock stream runs a task per stream that wakes on every pushed frame, hops to a
thread pool for every 32 ms window, and tees its events through a second task for
metrics. This one does none of that: `push_frame` cuts windows synchronously, the batcher
runs every stream's due windows in one model call, and events go straight to the one
consumer; metrics are counted inline. The base class's constructor (which starts those
tasks) is deliberately not called; every public method is implemented here.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Protocol

from livekit import rtc
from livekit.agents.metrics import VADMetrics
from livekit.agents.metrics.base import Metadata
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.vad import VAD, VADEvent, VADEventType, VADStream

from .detector import SpeechDetector
from .framing import FLUSH, Flush, Framer, Window
from .model import WindowModel
from .options import VADOptions


class StreamHost(Protocol):
    """What a stream needs of the batcher that serves it (a `VADBatcher`)."""

    model: WindowModel
    frames_pushed: int

    def register(self, stream: BatchedVADStream) -> None: ...

    def unregister(self, stream: BatchedVADStream) -> None: ...

    def ready(self, stream: BatchedVADStream) -> None: ...


class BatchedVADStream(VADStream):
    def __init__(self, vad: VAD, options: VADOptions, batcher: StreamHost) -> None:
        self._vad = vad
        self._owner = vad
        self._batcher = batcher
        self._opts = options
        self._last_activity_time = time.perf_counter()
        model = batcher.model
        self.pending: deque[Window | Flush] = deque()
        self.slot: int | None = None
        self._framer = Framer(model.sample_rate, model.window, self.pending)
        self._detector = SpeechDetector(self._opts, model.window, model.sample_rate)
        self._events: deque[VADEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._input_ended = False
        self.closed = False
        self._finished = False
        self._error: BaseException | None = None
        self._metrics_every = max(1, math.ceil(1 / vad.capabilities.update_interval))
        self._metrics_count = 0
        self._metrics_total = 0.0
        batcher.register(self)

    @property
    def owner(self) -> VAD:
        """The VAD view this stream belongs to (one per session)."""
        return self._owner

    async def _main_task(self) -> None:
        """Unused: the batcher does this stream's work."""

    # --- input -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} is closed; create a new stream.")
        if self._input_ended:
            raise RuntimeError(f"{type(self).__name__} input ended; create a new stream.")

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        """Queue a frame; complete windows go to the next batch."""
        self._check_open()
        first = not self._framer.input_rate
        made = self._framer.push(frame)
        if first and self._framer.input_rate:
            self._detector.start(self._framer.input_rate)
        self._batcher.frames_pushed += 1
        if made:
            self._batcher.ready(self)

    def flush(self) -> None:
        """End the segment: windows already complete are still decided, then all resets."""
        self._check_open()
        self._framer.reset()
        self.pending.append(FLUSH)
        self._batcher.ready(self)

    def end_input(self) -> None:
        """No more audio: the stream ends once what was pushed is decided."""
        self.flush()
        self._input_ended = True

    async def aclose(self) -> None:
        """Close at once; undecided audio is dropped."""
        self._close()

    def update_options(
        self,
        *,
        min_speech_duration: NotGivenOr[float] = NOT_GIVEN,
        min_silence_duration: NotGivenOr[float] = NOT_GIVEN,
        prefix_padding_duration: NotGivenOr[float] = NOT_GIVEN,
        max_buffered_speech: NotGivenOr[float] = NOT_GIVEN,
        activation_threshold: NotGivenOr[float] = NOT_GIVEN,
        deactivation_threshold: NotGivenOr[float] = NOT_GIVEN,
    ) -> None:
        """Change thresholds and durations, as `silero.VADStream.update_options` does."""
        before = self._opts.apply(
            min_speech_duration=min_speech_duration,
            min_silence_duration=min_silence_duration,
            prefix_padding_duration=prefix_padding_duration,
            max_buffered_speech=max_buffered_speech,
            activation_threshold=activation_threshold,
            deactivation_threshold=deactivation_threshold,
        )
        self.options_changed(before)

    def options_changed(self, max_buffered_before: float) -> None:
        """The shared options changed: resize the speech buffer to match."""
        self._detector.options_changed(max_buffered_before)

    # --- called by the batcher ------------------------------------------------------------
    def take_resets(self) -> None:
        """Apply the flushes at the head of the queue (between batches)."""
        while self.pending and isinstance(self.pending[0], Flush):
            self.pending.popleft()
            self._detector.reset()
            if self.slot is not None:
                self._batcher.model.reset(self.slot)
        if not self.pending and self._input_ended:
            self._finish()

    def decided(self, probability: float, window: Window, now: float) -> None:
        latency = now - window.ready_at
        self._detector.step(probability, window.chunk, latency, self._emit)
        self._metrics_count += 1
        self._metrics_total += latency
        if self._metrics_count >= self._metrics_every:
            self._vad.emit(
                "metrics_collected",
                VADMetrics(
                    timestamp=time.time(),
                    idle_time=time.perf_counter() - self._last_activity_time,
                    inference_duration_total=self._metrics_total,
                    inference_count=self._metrics_count,
                    label=self._vad._label,
                    metadata=Metadata(
                        model_name=self._vad.model, model_provider=self._vad.provider
                    ),
                ),
            )
            self._metrics_count = 0
            self._metrics_total = 0.0

    def fail(self, error: BaseException) -> None:
        """The model failed: the consumer gets the error after the events already out."""
        self._error = error
        self._close(keep_events=True)

    # --- output ----------------------------------------------------------------------------
    def _emit(self, ev: VADEvent) -> None:
        if ev.type is not VADEventType.INFERENCE_DONE:
            self._last_activity_time = time.perf_counter()
        self._events.append(ev)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self) -> None:
        self._finished = True
        self._batcher.unregister(self)
        self._wake()

    def _close(self, *, keep_events: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self._input_ended = True
        self.pending.clear()
        if not keep_events:
            self._events.clear()
        self._finish()

    async def __anext__(self) -> VADEvent:
        while not self._events:
            if self._finished:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()
