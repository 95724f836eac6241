"""Media keep-up counters: does the VAD hear every audio frame in time, and do loops lag?

A worker that takes more calls than its CPU can serve does not fail loudly: its event
loops run late, the VAD processes frames later and later, and turns are detected late.
With `OPENRTC_CALL_STATS=1` every VAD a call uses is wrapped so each audio frame pushed
into a VAD stream is timed until the inference window that holds it completes, and a
lag probe runs on every event loop that runs calls (the worker's loop, a job thread's
loop or a job process's loop alike). The totals are cumulative, so a reader takes two
snapshots and compares them over its own window.

Job processes (process isolation) send their totals to the worker every second over
livekit's log channel; the worker's `/snapshot` shows the sum under `call_stats`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import multiprocessing
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from livekit import rtc
from livekit.agents import vad as lk_vad

from ..turn import shared_predictor_stats
from .thread_cpu import THREAD_CPU

ENV_FLAG = "OPENRTC_CALL_STATS"
LATE_MS = 200.0
"""A frame whose VAD window completes later than this after its push counts as late: the
delay at which livekit's Silero plugin warns that the VAD is slower than real time."""
FRAME_LATENCY_EDGES_MS: tuple[float, ...] = (20, 50, 75, 100, 150, 200, 500, 1000, 2500, 5000)
LAG_EDGES_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 250, 500, 1000, 2000, 5000,
)  # fmt: skip
LAG_PROBE_INTERVAL = 0.1
REPORT_INTERVAL = 1.0
RECORD_FIELD = "openrtc_call_stats"
PID_FIELD = "openrtc_call_stats_pid"

logger = logging.getLogger("openrtc.call_stats")


def enabled() -> bool:
    return os.environ.get(ENV_FLAG, "").strip().lower() in ("1", "true", "yes", "on")


# --- histograms ---------------------------------------------------------------------------


def bucket_of(edges: Sequence[float], value: float) -> int:
    """Index of the bucket holding value: bucket i counts values <= edges[i]; the last, more."""
    return bisect.bisect_left(edges, value)


class _Totals:
    """One process's counters; every field is cumulative except the gauges."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.vad_streams_opened = 0
        self.vad_streams_open = 0
        self.vad_frames_pushed = 0
        self.vad_frames_done = 0
        self.vad_frames_late = 0
        self.vad_frames_flushed = 0
        self.vad_frames_unfinished = 0
        self.vad_latency = [0] * (len(FRAME_LATENCY_EDGES_MS) + 1)
        self.lag = [0] * (len(LAG_EDGES_MS) + 1)
        self.vad_kinds: dict[str, int] = {}
        self.streams: weakref.WeakSet[_CountingStream] = weakref.WeakSet()

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            streams = list(self.streams)
            out: dict[str, Any] = {
                "vad_streams_opened": self.vad_streams_opened,
                "vad_streams_open": self.vad_streams_open,
                "vad_frames_pushed": self.vad_frames_pushed,
                "vad_frames_done": self.vad_frames_done,
                "vad_frames_late": self.vad_frames_late,
                "vad_frames_flushed": self.vad_frames_flushed,
                "vad_frames_unfinished": self.vad_frames_unfinished,
                "vad_latency_hist": list(self.vad_latency),
                "loop_lag_hist": list(self.lag),
                "vad_kinds": dict(self.vad_kinds),
            }
        now = time.monotonic()
        pending = pending_late = 0
        for s in streams:
            p, late = s.pending(now)
            pending += p
            pending_late += late
        out["vad_frames_pending"] = pending
        out["vad_frames_pending_late"] = pending_late
        predictions = shared_predictor_stats()
        if predictions is not None:
            out["turn_predictions"] = predictions
        cpu = THREAD_CPU.read()
        if cpu is not None:
            out["thread_cpu_s"] = cpu
        out.update(_caller_totals())
        return out


_totals = _Totals()


def _caller_totals() -> dict[str, Any]:
    """The simulated callers' own counters, when this process runs any (read, not imported)."""
    import sys

    out: dict[str, Any] = {}
    media = sys.modules.get("openrtc.simulation.media")
    mic = getattr(media, "MIC_TOTALS", None)
    if mic is not None:
        out.update({f"mic_{k}": int(v) for k, v in mic.snapshot().items()})
    latency = sys.modules.get("openrtc.simulation.latency")
    turns = getattr(latency, "TURN_LATENCY", None)
    if turns is not None:
        out["turn_latency_hist"] = turns.snapshot()
    return out


# --- the VAD wrapper ------------------------------------------------------------------------


class _Segment:
    """Frames pushed between two flushes: (samples, pushed_at) each."""

    __slots__ = ("frames", "samples")

    def __init__(self) -> None:
        self.frames: deque[tuple[int, float]] = deque()
        self.samples = 0


class _CountingStream:
    """Delegates to a real VAD stream; times each pushed frame until its window is done."""

    def __init__(self, inner: lk_vad.VADStream, totals: _Totals, kind: str) -> None:
        self._inner = inner
        self._totals = totals
        self._segments: deque[_Segment] = deque([_Segment()])
        self._head_used = 0
        self._last_index = 0
        self._window = 0
        """Input samples per VAD window, learned from the first one done."""
        self._closed = False
        with totals.lock:
            totals.vad_streams_opened += 1
            totals.vad_streams_open += 1
            totals.vad_kinds[kind] = totals.vad_kinds.get(kind, 0) + 1
            totals.streams.add(self)
        self._loop = _LagProbe.stream_opened(totals)

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._inner.push_frame(frame)
        self._segments[-1].frames.append((frame.samples_per_channel, time.monotonic()))
        self._segments[-1].samples += frame.samples_per_channel
        with self._totals.lock:
            self._totals.vad_frames_pushed += 1

    def flush(self) -> None:
        self._inner.flush()
        self._segments.append(_Segment())

    def end_input(self) -> None:
        self._inner.end_input()
        self._segments.append(_Segment())

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._finish()

    def __aiter__(self) -> _CountingStream:
        return self

    async def __anext__(self) -> lk_vad.VADEvent:
        ev = await self._inner.__anext__()
        if ev.type == lk_vad.VADEventType.INFERENCE_DONE:
            self._window_done(self._window_samples(ev))
        return ev

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def pending(self, now: float) -> tuple[int, int]:
        """Frames pushed and not yet inside a finished window, and how many are late.

        A frame that ends in a segment's trailing partial window waits for more audio (the
        caller hung up, or a flush will drop it), not for the VAD: it is pending, never late.
        """
        total = late = 0
        for i, seg in enumerate(list(self._segments)):
            frames = list(seg.frames)
            tail = 0
            if self._window:
                spare = (seg.samples - (self._head_used if i == 0 else 0)) % self._window
                later = 0
                for samples, _ in reversed(frames):
                    if later >= spare:
                        break
                    tail += 1
                    later += samples
            for k, (_, at) in enumerate(frames):
                total += 1
                if k < len(frames) - tail and (now - at) * 1000 > LATE_MS:
                    late += 1
        return total, late

    def _window_samples(self, ev: lk_vad.VADEvent) -> int:
        n = sum(f.samples_per_channel for f in ev.frames)
        index = ev.samples_index
        if not n:
            n = index - self._last_index if index > self._last_index else index
        self._last_index = index
        return n

    def _window_done(self, n: int) -> None:
        self._window = n
        # a window never spans a flush: the VAD drops what was left before one
        flushed = 0
        while len(self._segments) > 1 and self._segments[0].samples - self._head_used < n:
            flushed += len(self._segments.popleft().frames)
            self._head_used = 0
        seg = self._segments[0]
        now = time.monotonic()
        latencies: list[float] = []
        need = n
        while need > 0 and seg.frames:
            samples, at = seg.frames[0]
            left = samples - self._head_used
            if left > need:
                self._head_used += need
                break
            need -= left
            seg.frames.popleft()
            seg.samples -= samples
            self._head_used = 0
            latencies.append((now - at) * 1000)
        t = self._totals
        with t.lock:
            t.vad_frames_flushed += flushed
            for ms in latencies:
                t.vad_frames_done += 1
                t.vad_latency[bucket_of(FRAME_LATENCY_EDGES_MS, ms)] += 1
                if ms > LATE_MS:
                    t.vad_frames_late += 1

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        left = sum(len(s.frames) for s in self._segments)
        self._segments.clear()
        self._segments.append(_Segment())
        with self._totals.lock:
            self._totals.vad_streams_open -= 1
            self._totals.vad_frames_unfinished += left
            self._totals.streams.discard(self)
        _LagProbe.stream_closed(self._loop)
        _Reporter.report_now()


class CountingVAD(lk_vad.VAD):
    """A VAD that hands out counting streams of another VAD and shares its events."""

    def __init__(self, inner: lk_vad.VAD, totals: _Totals | None = None) -> None:
        super().__init__(capabilities=inner.capabilities)
        self._inner = inner
        self._totals = totals or _totals
        self._label = inner._label

    @property
    def inner(self) -> lk_vad.VAD:
        return self._inner

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    def stream(self) -> lk_vad.VADStream:
        kind = f"{type(self._inner).__module__}.{type(self._inner).__qualname__}"
        stream: Any = _CountingStream(self._inner.stream(), self._totals, kind)
        return stream  # type: ignore[no-any-return]

    def on(self, event: Any, callback: Any = None) -> Any:
        return self._inner.on(event, callback)

    def off(self, event: Any, callback: Any) -> None:
        self._inner.off(event, callback)


def watch_vad(vad: Any) -> Any:
    """The VAD a call should use: `vad` wrapped in counters when call stats are on."""
    if not enabled() or not isinstance(vad, lk_vad.VAD) or isinstance(vad, CountingVAD):
        return vad
    _Reporter.ensure()
    return CountingVAD(vad)


# --- loop lag -------------------------------------------------------------------------------


class _LagProbe:
    """One per event loop running calls; stops once that loop has no open VAD stream."""

    _lock = threading.Lock()
    _tasks: set[asyncio.Task[None]] = set()
    _open: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()

    @classmethod
    def stream_opened(cls, totals: _Totals) -> asyncio.AbstractEventLoop | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        with cls._lock:
            count = cls._open.get(loop, 0)
            cls._open[loop] = count + 1
        if count == 0:
            THREAD_CPU.note_loop_thread()
            task = loop.create_task(cls._run(totals, loop), name="openrtc.lag_probe")
            cls._tasks.add(task)
            task.add_done_callback(cls._tasks.discard)
        return loop

    @classmethod
    def stream_closed(cls, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None:
            return
        with cls._lock:
            cls._open[loop] = max(0, cls._open.get(loop, 0) - 1)

    @classmethod
    async def _run(cls, totals: _Totals, loop: asyncio.AbstractEventLoop) -> None:
        while cls._open.get(loop, 0) > 0:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE_INTERVAL)
            lag_ms = max(0.0, (time.monotonic() - before - LAG_PROBE_INTERVAL) * 1000)
            with totals.lock:
                totals.lag[bucket_of(LAG_EDGES_MS, lag_ms)] += 1


# --- job processes -> worker --------------------------------------------------------------


class _Reporter:
    """In a job process: sends this process's totals to the worker every second."""

    _thread: threading.Thread | None = None
    _lock = threading.Lock()

    @classmethod
    def ensure(cls) -> None:
        if multiprocessing.parent_process() is None or _Collector.installed:
            return  # the worker process itself: /snapshot reads the totals directly
        with cls._lock:
            if cls._thread is None:
                logger.setLevel(logging.INFO)
                cls._thread = threading.Thread(
                    target=cls._loop, name="openrtc.call_stats", daemon=True
                )
                cls._thread.start()

    @classmethod
    def _loop(cls) -> None:
        while True:
            time.sleep(REPORT_INTERVAL)
            cls.report_now()

    @classmethod
    def report_now(cls) -> None:
        if cls._thread is None:
            return
        logger.info("call stats", extra={RECORD_FIELD: _totals.to_dict(), PID_FIELD: os.getpid()})


class _Collector(logging.Handler):
    """In the worker: keeps the latest totals each job process sent."""

    installed = False

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.latest: dict[int, dict[str, Any]] = {}
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        stats = getattr(record, RECORD_FIELD, None)
        pid = getattr(record, PID_FIELD, None)
        if isinstance(stats, dict) and isinstance(pid, int):
            with self.guard:
                self.latest[pid] = stats


_collector: _Collector | None = None


def install_collector() -> None:
    """Hear job processes' totals (their records are not printed); idempotent."""
    global _collector
    if _collector is not None:
        return
    _collector = _Collector()
    _Collector.installed = True
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(_collector)


_GAUGES = ("vad_streams_open", "vad_frames_pending", "vad_frames_pending_late")


def merge(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum counters, histograms and per-kind counts of several processes' totals."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                prev_d = dict(out.get(key) or {})
                for k, v in value.items():
                    prev_d[k] = prev_d.get(k, 0) + v
                out[key] = prev_d
            elif isinstance(value, list):
                prev = out.get(key) or [0] * len(value)
                out[key] = [a + b for a, b in zip(prev, value, strict=False)]
            elif isinstance(value, int | float):
                out[key] = out.get(key, 0) + value
    return out


def snapshot() -> dict[str, Any]:
    """This worker's totals plus its job processes' latest (gauges of live ones only)."""
    import sys

    import psutil

    parts = [_totals.to_dict()]
    remote = 0
    if _collector is not None:
        with _collector.guard:
            latest = dict(_collector.latest)
        for pid, stats in latest.items():
            alive = psutil.pid_exists(pid)
            remote += alive
            parts.append(stats if alive else {k: v for k, v in stats.items() if k not in _GAUGES})
    out = merge(parts)
    out["processes_reporting"] = remote
    out["late_ms"] = LATE_MS
    out["vad_latency_edges_ms"] = list(FRAME_LATENCY_EDGES_MS)
    out["loop_lag_edges_ms"] = list(LAG_EDGES_MS)
    latency = sys.modules.get("openrtc.simulation.latency")
    edges = getattr(latency, "TURN_LATENCY_EDGES_MS", None)
    if edges is not None:
        out["turn_latency_edges_ms"] = list(edges)
    return out
