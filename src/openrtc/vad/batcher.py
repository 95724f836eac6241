"""The one place the VAD model runs for every call on an event loop.

Streams cut their audio into windows as it is pushed and mark themselves ready. Every
`interval` seconds (while any window is due) the batcher takes the first due window of
each ready stream, runs them all through the model, and hands each stream its
probability. The batched ONNX call runs on the batcher's own thread (the loop keeps
serving calls meanwhile); livekit's native Silero, a few microseconds a window, runs on
the loop itself. A stream with more than one window due gets further rounds in the same
tick, so nothing falls behind while the CPU keeps up.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .framing import Window
from .model import I16, WindowModel

if TYPE_CHECKING:
    from .stream import BatchedVADStream

logger = logging.getLogger("openrtc.vad")

LATE_WARNING_S = 0.2
"""A window decided later than this after its audio arrived is logged (as stock does)."""
WARN_EVERY_S = 10.0
THREAD_NAME = "openrtc-vad"
"""Prefix of the model thread's name (ops.thread_cpu reads its CPU by this name)."""


class VADBatcher:
    """Serves every `BatchedVADStream` of one event loop; its task runs while any is open."""

    def __init__(self, model: WindowModel, *, interval: float) -> None:
        self.model = model
        self.interval = interval
        self._streams: set[BatchedVADStream] = set()
        self._ready: dict[BatchedVADStream, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_at = 0.0
        self._warned_at = -WARN_EVERY_S
        self.frames_pushed = 0
        self.inferences = 0
        self.batches = 0
        self.twins = 0
        self._late_max = 0.0
        self._in_flight_since: float | None = None
        """perf_counter() at which the oldest window of the batch being run became ready."""

    # --- streams ---------------------------------------------------------------------------
    def register(self, stream: BatchedVADStream) -> None:
        self._streams.add(stream)
        if self._task is None or self._task.done():
            # an empty context: the batcher serves every call, it belongs to none of them
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="openrtc.vad_batcher", context=contextvars.Context()
            )

    def unregister(self, stream: BatchedVADStream) -> None:
        if stream not in self._streams:
            return
        self._streams.discard(stream)
        self._ready.pop(stream, None)
        if stream.slot is not None:
            self.model.release(stream.slot)
            stream.slot = None
        if not self._streams:
            self._wake.set()

    def ready(self, stream: BatchedVADStream) -> None:
        """The stream has windows or a flush queued."""
        if stream in self._streams:
            self._ready[stream] = None
            self._wake.set()

    @property
    def live_streams(self) -> int:
        return len(self._streams)

    def stats(self) -> dict[str, Any]:
        """Counters since the start, and the worst window delay since the last call."""
        late, self._late_max = self._late_max, 0.0
        return {
            "streams": len(self._streams),
            "pushes": self.frames_pushed,
            "inferences": self.inferences,
            "batches": self.batches,
            "twins": self.twins,
            "worst_delay_ms": round(1000 * late, 2),
        }

    def behind_s(self, now: float | None = None) -> float:
        """How far behind real time the VAD runs right now: the age of the oldest window
        not yet decided (in the running batch or still queued), 0 when none waits.

        Unlike `stats()` it resets nothing, so any number of readers can poll it.
        """
        now = time.perf_counter() if now is None else now
        oldest = self._in_flight_since
        for stream in list(self._streams):
            for item in stream.pending:
                if isinstance(item, Window):
                    if oldest is None or item.ready_at < oldest:
                        oldest = item.ready_at
                    break
        return 0.0 if oldest is None else max(0.0, now - oldest)

    # --- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        try:
            while self._streams:
                if not self._ready:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                delay = self._next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._next_at = loop.time() + self.interval
                await self._decide(loop, executor)
        finally:
            executor.shutdown(wait=False)

    def _round(self, streams: list[BatchedVADStream]) -> _Round:
        """The next window of each stream (flushes applied first), twins folded."""
        batch = _Round()
        by_owner: dict[int, list[int]] = {}
        for stream in streams:
            if stream.closed:
                continue
            stream.take_resets()
            if stream.closed or not stream.pending or stream not in self._streams:
                continue
            if stream.slot is None:
                stream.slot = self.model.allocate()
            window = stream.pending.popleft()
            assert isinstance(window, Window)
            siblings = by_owner.setdefault(id(stream.owner), []) if self.model.folds_twins else []
            batch.add(stream, stream.slot, window, siblings, self.model)
        return batch

    async def _decide(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        streams = list(self._ready)
        self._ready.clear()
        while streams:
            batch = self._round(streams)
            if not batch.entries:
                return
            rows = await self._run_model(loop, executor, batch)
            if rows is None:
                return
            now = time.perf_counter()
            self.batches += 1
            self.inferences += len(batch.entries)
            self.twins += len(batch.twins)
            late = now - min(window.ready_at for _, window, _ in batch.entries)
            self._late_max = max(self._late_max, late)
            if late > LATE_WARNING_S and now - self._warned_at > WARN_EVERY_S:
                self._warned_at = now
                logger.warning(
                    "VAD is %.0f ms behind real time on %d streams: this worker has more "
                    "calls than its CPU can serve; lower max_concurrent_sessions",
                    1000 * late,
                    len(self._streams),
                )
            for stream, window, row in batch.entries:
                if not stream.closed:
                    stream.decided(rows[row], window, now)
            streams = [s for s, _, _ in batch.entries if s.pending and not s.closed]

    async def _run_model(
        self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor, batch: _Round
    ) -> list[float] | None:
        """The batch's probabilities, or None after failing its streams.

        A model that answers in microseconds per window (`inline`) runs right here on the
        loop: handing it to the thread would cost a GIL hand-over per window, and a busy
        loop holds the GIL for up to its 5 ms switch interval each time.
        """
        self.model.begin()
        self._in_flight_since = min(window.ready_at for _, window, _ in batch.entries)
        future: asyncio.Future[Any] | None = None
        try:
            if self.model.inline:
                out = self.model.run(batch.slots, batch.windows, batch.twins)
            else:
                future = loop.run_in_executor(
                    executor, self.model.run, batch.slots, batch.windows, batch.twins
                )
                out = await future
            return list(out.tolist())
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            logger.exception("the VAD model failed on a batch of %d windows", len(batch.slots))
            for stream, _, _ in batch.entries:
                stream.fail(e)
            if not isinstance(e, Exception):
                raise  # the batcher task ends; the next stream registered starts another
            return None
        finally:
            self._in_flight_since = None
            if future is None or future.done():
                self.model.end()
            else:  # cancelled while the thread still runs: free slots once it is done
                future.add_done_callback(lambda _: self.model.end())


class _Round:
    """One model call: the windows that run, and twins that reuse a row's answer.

    The two VAD streams of one call (turn taking's and the STT adapter's) usually get the
    very same frames; while they stay in step their state and windows are identical, so
    one row serves both.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[BatchedVADStream, Window, int]] = []
        self.slots: list[int] = []
        self.windows: list[I16] = []
        self.twins: list[tuple[int, int]] = []

    def add(
        self,
        stream: BatchedVADStream,
        slot: int,
        window: Window,
        siblings: list[int],
        model: WindowModel,
    ) -> None:
        """siblings: rows already in this round from streams of the same VAD view."""
        for row in siblings:
            if window.samples.tobytes() == self.windows[row].tobytes() and model.same_state(
                slot, self.slots[row]
            ):
                self.twins.append((slot, row))
                self.entries.append((stream, window, row))
                return
        row = len(self.slots)
        siblings.append(row)
        self.slots.append(slot)
        self.windows.append(window.samples)
        self.entries.append((stream, window, row))
