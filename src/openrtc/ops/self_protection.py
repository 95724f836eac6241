"""A worker that protects itself without cutting a call.

- Memory watermarks: above `memory_warn_mb` a warning is logged once per crossing; above
  `memory_limit_mb` the worker drains (reason `memory_limit`). Memory is the process's
  USS (what the kernel would free if it exited), or its RSS where USS is unavailable.
- A run of `consecutive_failure_limit` failed calls drains the worker (reason
  `consecutive_failures`): something in this process is broken, a fresh one may not be.
- Slow calls: when the event loop is blocked for more than `slow_call_threshold_ms`, the
  call whose code blocked it (and the line it was on) is logged with its job id, since
  one blocking call delays every other call on the loop.

A drain lets live calls finish; the orchestrator starts a replacement worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import sysconfig
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import psutil

from ..sessions import CallTag, Outcome, call_in, current_call

if TYPE_CHECKING:
    from ..pool import AgentPool
    from ..sessions import SessionInfo, SessionOutcome

logger = logging.getLogger("openrtc.self_protection")

MB = 1024 * 1024
ACTOR = "self_protection"


# --- memory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryReading:
    uss_mb: float | None
    rss_mb: float

    @property
    def measure(self) -> str:
        return "USS" if self.uss_mb is not None else "RSS"

    @property
    def used_mb(self) -> float:
        return self.uss_mb if self.uss_mb is not None else self.rss_mb

    def to_dict(self) -> dict[str, float | None]:
        uss = None if self.uss_mb is None else round(self.uss_mb, 1)
        return {"uss_mb": uss, "rss_mb": round(self.rss_mb, 1)}


def read_memory(process: psutil.Process) -> MemoryReading:
    """USS and RSS of the process; USS is None where the platform cannot tell it."""
    try:
        full = process.memory_full_info()
    except (psutil.AccessDenied, NotImplementedError):
        return MemoryReading(None, process.memory_info().rss / MB)
    uss = getattr(full, "uss", None)
    return MemoryReading(None if uss is None else uss / MB, full.rss / MB)


class MemoryGuard:
    """One reading per `check()`; the watermarks are read from the pool every time."""

    def __init__(self, pool: AgentPool, reader: Callable[[], MemoryReading] | None = None) -> None:
        self.pool = pool
        process = psutil.Process()
        self._read = reader or (lambda: read_memory(process))
        self.last: MemoryReading | None = None
        self._warned = False
        self._drained = False

    def check(self) -> MemoryReading:
        reading = self._read()
        if self.last is None:
            marks = (
                ("warn", self.pool.config.protection.memory_warn_mb),
                ("limit", self.pool.config.protection.memory_limit_mb),
            )
            logger.info(
                "memory watermarks (%s) are measured as %s%s",
                ", ".join(f"{name} {mb:g} MB" for name, mb in marks if mb is not None),
                reading.measure,
                "" if reading.uss_mb is not None else " because USS is unavailable here",
            )
        self.last = reading
        used, measure = reading.used_mb, reading.measure
        warn, limit = (
            self.pool.config.protection.memory_warn_mb,
            self.pool.config.protection.memory_limit_mb,
        )
        if warn is not None and used >= warn:
            if not self._warned:
                logger.warning(
                    "worker memory %s %.0f MB is above memory_warn_mb %g MB",
                    measure,
                    used,
                    warn,
                )
            self._warned = True
        else:
            self._warned = False
        if limit is not None and used >= limit and not self._drained:
            self._drained = True
            logger.error(
                "worker memory %s %.0f MB reached memory_limit_mb %g MB: draining "
                "(live calls finish, new calls go to other workers)",
                measure,
                used,
                limit,
            )
            self.pool.begin_drain(reason="memory_limit", actor=ACTOR)
        return reading


# --- consecutive failures -------------------------------------------------------------


class FailureRun:
    """Counts failed calls in a row; a success resets the run, a cut call leaves it."""

    def __init__(self, pool: AgentPool, limit: int) -> None:
        self.pool = pool
        self.limit = limit
        self.run = 0
        self.active = True
        self._drained = False

    def on_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        if not self.active:
            return
        if outcome.status is Outcome.SUCCESS:
            self.run = 0
            return
        if outcome.status is not Outcome.FAILED:
            return
        self.run += 1
        if self.run >= self.limit and not self._drained:
            self._drained = True
            logger.error(
                "%d calls failed in a row (last: %s, %s): draining this worker",
                self.run,
                info.job_id,
                outcome.error or "no error text",
            )
            self.pool.begin_drain(reason="consecutive_failures", actor=ACTOR)


# --- slow calls -----------------------------------------------------------------------


@dataclass(frozen=True)
class SlowCall:
    """One blocked stretch of the event loop and the call that was running in it."""

    blocked_ms: float
    job_id: str | None
    agent: str | None
    location: str
    samples: int
    others: tuple[str, ...] = ()

    def describe(self) -> str:
        who = (
            f"call {self.job_id} (agent {self.agent or '?'})"
            if self.job_id
            else "code outside any call"
        )
        text = f"event loop blocked {self.blocked_ms:.0f} ms by {who} at {self.location}"
        if self.others:
            text += f"; also seen: {', '.join(self.others)}"
        return text


Sample = tuple[str | None, str | None, str]
_LIBRARY_DIRS = tuple(
    os.path.realpath(p)
    for p in {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)
_TASK_PREFIXES = ("entrypoint:", "call:")


@functools.lru_cache(maxsize=4096)
def _is_library(filename: str) -> bool:
    return filename.startswith("<") or os.path.realpath(filename).startswith(_LIBRARY_DIRS)


def _location(frame: FrameType | None) -> str:
    """The innermost frame outside the stdlib and installed packages (else the innermost)."""
    innermost = frame
    depth = 0
    while frame is not None and depth < 200:
        if not _is_library(frame.f_code.co_filename):
            break
        frame, depth = frame.f_back, depth + 1
    chosen = frame if frame is not None and depth < 200 else innermost
    if chosen is None:
        return "an unknown place (no Python frame)"
    path = chosen.f_code.co_filename
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(path)
        path = path if rel.startswith("..") else rel
    return f"{path}:{chosen.f_lineno} in {chosen.f_code.co_name}"


class SlowCallDetector:
    """Names the call that blocked the loop, at a cost of one wake-up per interval.

    On the loop, a heartbeat sleeps `interval` and measures how late it wakes. A
    watchdog thread notices while the heartbeat is overdue, and samples the loop
    thread's stack and the loop's running task (each call's tasks are tagged with the
    call when created, through the loop's task factory). When the heartbeat runs again
    and was late by more than the threshold, the most-sampled call is logged.
    """

    def __init__(
        self, threshold_ms: float, *, agent_of: Callable[[str], str | None] = lambda _j: None
    ) -> None:
        self.threshold_ms = float(threshold_ms)
        self.interval = min(max(self.threshold_ms / 4000, 0.005), 0.25)
        self.reports: deque[SlowCall] = deque(maxlen=100)
        self.total = 0
        self._agent_of = agent_of
        self._tags: weakref.WeakKeyDictionary[asyncio.Task[Any], CallTag] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._samples: Counter[Sample] = Counter()
        self._epoch = 0.0
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._previous_factory: Any = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        """Start on the loop to watch (the worker's loop)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._thread_id = threading.get_ident()
        self._previous_factory = loop.get_task_factory()
        loop.set_task_factory(self._create_task)  # type: ignore[arg-type]
        if getattr(asyncio.tasks, "_current_tasks", None) is None:
            logger.warning(
                "this Python does not expose the running task to other threads: blocked "
                "loops are reported with the code location only"
            )
        self._beat = time.monotonic()
        self._heartbeat = asyncio.create_task(self._run_heartbeat(), name="slow_call_heartbeat")
        self._watchdog = threading.Thread(
            target=self._watch, name="openrtc-slow-call-watchdog", daemon=True
        )
        self._watchdog.start()

    async def aclose(self) -> None:
        self._stop.set()
        if self._loop is not None and self._loop.get_task_factory() == self._create_task:
            self._loop.set_task_factory(self._previous_factory)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.join, 5.0)

    # -- on the loop -------------------------------------------------------------------
    def _create_task(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        previous = self._previous_factory
        if previous is not None:
            task: asyncio.Task[Any] = previous(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        context = kwargs.get("context")
        tag = call_in(context) if context is not None else current_call()
        if tag is not None:
            self._tags[task] = tag
        return task

    async def _run_heartbeat(self) -> None:
        while True:
            before = time.monotonic()
            self._beat = before
            await asyncio.sleep(self.interval)
            late_ms = (time.monotonic() - before - self.interval) * 1000
            if late_ms >= self.threshold_ms:
                self._report(late_ms, self._take_samples(before))

    def _take_samples(self, epoch: float) -> Counter[Sample]:
        with self._lock:
            samples = self._samples if self._epoch == epoch else Counter()
            self._samples = Counter()
        return samples

    def _report(self, late_ms: float, samples: Counter[Sample]) -> None:
        if samples:
            (job_id, agent, location), count = samples.most_common(1)[0]
            others = tuple(sorted({j for j, _, _ in samples if j is not None and j != job_id}))
        else:
            job_id, agent, count, others = None, None, 0, ()
            location = "an unknown place (not sampled while blocked)"
        report = SlowCall(late_ms, job_id, agent, location, count, others)
        self.reports.append(report)
        self.total += 1
        logger.warning(report.describe(), extra={"job_id": job_id} if job_id else None)

    # -- on the watchdog thread --------------------------------------------------------
    def _watch(self) -> None:
        half = self.threshold_ms / 2000
        while not self._stop.wait(self.interval):
            beat = self._beat
            if time.monotonic() - beat - self.interval < half:
                continue
            sample = self._sample()
            with self._lock:
                if self._epoch != beat:
                    self._samples = Counter()
                    self._epoch = beat
                self._samples[sample] += 1

    def _sample(self) -> Sample:
        frame = sys._current_frames().get(self._thread_id)
        location = _location(frame)
        del frame
        task = self._running_task()
        if task is None:
            return None, None, location
        tag = self._tags.get(task)
        if tag is not None:
            return tag.job_id, tag.agent, location
        name = task.get_name()
        for prefix in _TASK_PREFIXES:
            if name.startswith(prefix):
                job_id = name[len(prefix) :]
                return job_id, self._agent_of(job_id), location
        return None, None, location

    def _running_task(self) -> asyncio.Task[Any] | None:
        current = getattr(asyncio.tasks, "_current_tasks", None)
        if not isinstance(current, dict) or self._loop is None:
            return None
        task = current.get(self._loop)
        return task if isinstance(task, asyncio.Task) else None


# --- the component --------------------------------------------------------------------


class SelfProtection:
    """The parts the pool's options ask for, started and stopped with the worker."""

    def __init__(
        self,
        pool: AgentPool,
        *,
        memory_interval_s: float = 1.0,
        memory_reader: Callable[[], MemoryReading] | None = None,
    ) -> None:
        self.pool = pool
        self.memory_interval_s = memory_interval_s
        group = pool.config.protection
        self.memory_guard: MemoryGuard | None = None
        if group.memory_warn_mb is not None or group.memory_limit_mb is not None:
            self.memory_guard = MemoryGuard(pool, memory_reader)
        self.failures: FailureRun | None = None
        if group.consecutive_failure_limit is not None:
            self.failures = FailureRun(pool, group.consecutive_failure_limit)
        self.slow_calls: SlowCallDetector | None = None
        if group.slow_call_threshold_ms is not None:
            self.slow_calls = SlowCallDetector(
                group.slow_call_threshold_ms, agent_of=self._agent_of
            )
        self._sampler: asyncio.Task[None] | None = None

    @staticmethod
    def wanted(pool: AgentPool) -> bool:
        return pool.config.protection.enabled

    @property
    def memory(self) -> dict[str, float | None] | None:
        """The last memory reading, {"uss_mb": ..., "rss_mb": ...}, or None before one."""
        guard = self.memory_guard
        return None if guard is None or guard.last is None else guard.last.to_dict()

    def start(self) -> None:
        if self.failures is not None:
            self.pool.add_end_listener(self.failures.on_end)
        if self.slow_calls is not None:
            self.slow_calls.start()
        if self.memory_guard is not None:
            self._sampler = asyncio.create_task(self._sample_memory(), name="memory_watermarks")

    async def aclose(self) -> None:
        if self.failures is not None:
            self.failures.active = False
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        if self.slow_calls is not None:
            await self.slow_calls.aclose()

    async def _sample_memory(self) -> None:
        guard = self.memory_guard
        assert guard is not None
        failing = False
        while True:
            try:
                # reading smaps walks the process's page tables (milliseconds for a big
                # worker): off the loop, so offers and calls never wait behind it
                await asyncio.to_thread(guard.check)
                failing = False
            except psutil.Error as e:
                if not failing:
                    logger.warning("cannot read this process's memory: %s", e)
                failing = True
            await asyncio.sleep(self.memory_interval_s)

    def _agent_of(self, job_id: str) -> str | None:
        route = self.pool.route_of(job_id)
        return None if route is None else route.agent


def start(pool: AgentPool) -> SelfProtection | None:
    """Start self-protection on the running loop when any of its options is set."""
    if not SelfProtection.wanted(pool):
        return None
    protection = SelfProtection(pool)
    protection.start()
    return protection
