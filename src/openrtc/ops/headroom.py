"""The load a worker reports: its own measured headroom, so a server stops in time.

With no cap a worker used to report load 0.0 whatever it carried, and a server kept
sending it calls long after they degraded. Five measures say how close this worker is
to degrading its calls, each scaled so 1.0 means "calls are degrading now":

- `loop_lag`: the worst event-loop lag seen per tick, over `LAG_FULL_S` (100 ms: twice
  the 50 ms loop-lag p99 a worker that keeps up stays under).
- `loop_busy`: the CPU the event loop's own thread used since the last reading, over
  `LOOP_BUSY_FULL_CORES` of one core. One process's calls all share that one thread: it
  runs out long before the process's CPU over all the box's cores says so.
- `vad_backlog`: how far behind real time the shared batched VAD runs (the age of its
  oldest undecided window), over `VAD_FULL_S` (the 200 ms at which it warns).
- `turn_backlog`: how long the oldest end-of-turn request has waited for the shared
  model, over `TURN_FULL_S` (the 300 ms at which it warns; livekit asks 200 ms into a
  silence and waits for the answer at the end of speech, ~350 ms later). The model's
  thread runs nicer than the calls, so it is starved first when the box has no CPU left.
- `cpu`: this process's CPU over the cores it may use (affinity and cgroup quota),
  split evenly between the processes of an `openrtc start --processes N` worker: two
  children on two cores each count against one, so the box fills before either refuses
  late. The end-of-turn model's CPU counts here too, nicer though it runs: left out,
  a burst of new calls (each one's first turn asks the model at once) was admitted long
  before its load showed (bench/overload.py at commit 06eb0b0, which left it out: two
  processes admitted 121 of 130 and their VAD fell behind;
  bench/results/overload-cpu-without-eot.json).

Each is smoothed with an exponential moving average that rises fast (`RISE_S`; `cpu`
at `CPU_RISE_S`, as it also holds the start-up work of the calls just admitted) and falls
slowly (`SMOOTHING_S`): a worker that waited the 3 s of a symmetric average admitted all
of a 130-call burst before it refused one (bench/overload.py; docs/performance.md says
how to rerun that). One reading never weighs more than one tick on the way up
(`RISE_MAX_STEP_S`) or one second on the way down, so a single stall of the loop,
however long, moves the load by at most 39% and does not fill the worker alone. The load
is the largest smoothed measure, and the one that is largest is "why".

At `limits.load_threshold` the worker refuses offers
(reason `overloaded`) and reports 1.0, which the server sees as WS_FULL; it takes calls
again once the load falls `RESUME_MARGIN` below the threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ..admission import Refuse, RejectReason
from ..turn import shared_predictor_behind_s
from ..turn.predictor import LATE_WARNING_S as TURN_LATE_S
from ..vad import batchers_of
from ..vad.batcher import LATE_WARNING_S

if TYPE_CHECKING:
    from livekit.agents import JobRequest

    from ..pool import AgentPool
    from .loop_lag import LoopLagMonitor

logger = logging.getLogger("openrtc.headroom")

COMPONENTS = ("loop_lag", "loop_busy", "vad_backlog", "turn_backlog", "cpu")
LAG_FULL_S = 0.1
LOOP_BUSY_FULL_CORES = 0.8
"""The loop's thread shares the GIL with the VAD and end-of-turn threads, so its calls
degrade before it uses a whole core: on a 2-core box one process's calls sit at the edge
at 75 with its loop's thread near 0.6 of a core (bench/density.py: kept up in the run of
commit 16001ab, one VAD-lag warning in the next) and fell behind at 100, at 0.78."""
VAD_FULL_S = LATE_WARNING_S
TURN_FULL_S = TURN_LATE_S
SMOOTHING_S = 3.0
"""Time constant of the moving average on the way down: a fall shows ~63% after this long."""
RISE_S = 0.5
"""Time constant on the way up: a sustained rise shows ~63% after this long."""
CPU_RISE_S = 1.0
"""`cpu` rises slower: it also holds each new call's start-up work (its first turn asks
the end-of-turn model at once), which passes once the calls settle (docs/performance.md
shows what each setting admitted in a burst)."""
MAX_STEP_S = 1.0
"""On the way down one reading never weighs more than this much time."""
RISE_MAX_STEP_S = 0.25
"""On the way up one reading never weighs more than one tick, however late it came: a
single multi-second stall moves the load by at most 1 - exp(-0.25/0.5) = 39%."""
RESUME_MARGIN = 0.1
TICK_S = 0.25
PUSH_STEP = 0.05
"""Tell the server at once when the reported load moved this much since the last push."""


class LoadEstimator:
    """Smoothed measures -> load, why, and overloaded (with hysteresis). No clock of its
    own: `update(now, readings)` takes the time, so it is tested with a fake one."""

    def __init__(
        self,
        threshold: float,
        *,
        smoothing_s: float = SMOOTHING_S,
        max_step_s: float = MAX_STEP_S,
        rise_s: float = RISE_S,
        cpu_rise_s: float = CPU_RISE_S,
        rise_max_step_s: float = RISE_MAX_STEP_S,
        resume_margin: float = RESUME_MARGIN,
    ) -> None:
        self.threshold = threshold
        self.smoothing_s = smoothing_s
        self.max_step_s = max_step_s
        self.rise_s = {name: cpu_rise_s if name == "cpu" else rise_s for name in COMPONENTS}
        """Each measure's time constant on the way up."""
        self.rise_max_step_s = rise_max_step_s
        self.resume_below = threshold - min(resume_margin, threshold / 2)
        self.components: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
        self.raw: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
        self.overloaded = False
        self._at: float | None = None

    @property
    def load(self) -> float:
        return max(self.components.values())

    @property
    def why(self) -> str:
        """The measure that dominates the load."""
        return max(COMPONENTS, key=lambda c: self.components[c])

    @property
    def reported(self) -> float:
        """What the server is told: 1.0 (full) while overloaded, else the load."""
        return 1.0 if self.overloaded else self.load

    def update(self, now: float, readings: Mapping[str, float]) -> bool:
        """Fold in one reading per measure (each clamped to 0..1); True if overloaded flipped."""
        previous = self._at
        self._at = now
        for name in COMPONENTS:
            value = readings.get(name)
            if value is None or not math.isfinite(value):
                continue
            self.raw[name] = min(1.0, max(0.0, value))
        if previous is None:
            return False
        elapsed = max(0.0, now - previous)
        step = min(elapsed, self.rise_max_step_s)
        fall = 1.0 - math.exp(-min(elapsed, self.max_step_s) / self.smoothing_s)
        for name in COMPONENTS:
            gap = self.raw[name] - self.components[name]
            rise = 1.0 - math.exp(-step / self.rise_s[name])
            self.components[name] += (rise if gap > 0 else fall) * gap
        was = self.overloaded
        if not was and self.load >= self.threshold:
            self.overloaded = True
        elif was and self.load < self.resume_below:
            self.overloaded = False
        return was != self.overloaded


def usable_cores() -> float:
    """Cores this process may use: its CPU affinity, lowered by a cgroup v2 CPU quota."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return max(cores, 0.01)


class ProcessCpu:
    """This process's CPU since the previous reading, as a share of the cores it may count
    on: the usable cores, split evenly between the worker processes that share them."""

    def __init__(self, sharing: int = 1) -> None:
        self._process = psutil.Process()
        self._cores = usable_cores() / max(1, sharing)
        self._process.cpu_percent(None)

    @property
    def cores(self) -> float:
        """The cores this process's CPU is counted against."""
        return self._cores

    def __call__(self) -> float:
        return float(self._process.cpu_percent(None)) / 100.0 / self._cores


class LoopBusy:
    """The share of one core the calling thread used since the previous reading. Read it
    on the event loop's thread: `time.thread_time` counts the caller's own thread only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cpu = time.thread_time()
        self._at = clock()

    def __call__(self) -> float:
        cpu, now = time.thread_time(), self._clock()
        elapsed = now - self._at
        used = cpu - self._cpu
        self._cpu, self._at = cpu, now
        return used / elapsed if elapsed > 0 else 0.0


def vad_behind_s(loop: asyncio.AbstractEventLoop) -> float:
    """How far behind real time the shared VADs serving `loop` run (0 with none)."""
    return max((b.behind_s() for b in batchers_of(loop)), default=0.0)


class Headroom:
    """Samples the measures every `tick` s on the worker's loop and plugs the result into
    the pool: its load source (what the server is told) and an admission check."""

    def __init__(
        self,
        pool: AgentPool,
        lag: LoopLagMonitor,
        *,
        tick: float = TICK_S,
        cpu: Callable[[], float] | None = None,
        loop_busy: Callable[[], float] | None = None,
        vad_behind: Callable[[], float] | None = None,
        turn_behind: Callable[[], float] | None = shared_predictor_behind_s,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.lag = lag
        self.tick = tick
        self.estimator = LoadEstimator(pool.config.limits.load_threshold)
        self._cpu = cpu
        self._loop_busy = loop_busy
        self._vad_behind = vad_behind
        self._turn_behind = turn_behind
        self._clock = clock
        self._worst_lag = 0.0
        self._pushed = 0.0
        self._task: asyncio.Task[None] | None = None
        self._active = False

    def start(self) -> None:
        """Start on the worker's loop; the pool consults this from then on."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        if self._cpu is None:
            self._cpu = ProcessCpu(self.pool.config.runtime.cpu_sharing)
        if self._loop_busy is None:
            self._loop_busy = LoopBusy()
        if self._vad_behind is None:
            self._vad_behind = lambda: vad_behind_s(loop)
        self.lag.observers.append(self._on_lag)
        if not self._active:
            self.pool.add_admission_check(self.check)
        self._active = True
        self.pool.set_load_source(lambda: self.estimator.reported)
        self.estimator.update(self._clock(), {})
        self._task = asyncio.create_task(self._run(), name="openrtc.headroom")

    async def aclose(self) -> None:
        self._active = False
        self.pool.set_load_source(None)
        if self._on_lag in self.lag.observers:
            self.lag.observers.remove(self._on_lag)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _on_lag(self, seconds: float) -> None:
        self._worst_lag = max(self._worst_lag, seconds)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                self.sample()
            except Exception:
                logger.exception("measuring this worker's load failed")

    def readings(self) -> dict[str, float]:
        """One raw reading of each measure, scaled so 1.0 means calls degrade now."""
        worst, self._worst_lag = self._worst_lag, 0.0
        out = {"loop_lag": worst / LAG_FULL_S}
        if self._loop_busy is not None:
            out["loop_busy"] = self._loop_busy() / LOOP_BUSY_FULL_CORES
        if self._vad_behind is not None:
            out["vad_backlog"] = self._vad_behind() / VAD_FULL_S
        if self._turn_behind is not None:
            out["turn_backlog"] = self._turn_behind() / TURN_FULL_S
        if self._cpu is not None:
            with contextlib.suppress(psutil.Error):
                out["cpu"] = self._cpu()
        return out

    def sample(self) -> None:
        """Take a reading; tell the server and the log when the worker fills or frees up."""
        est = self.estimator
        flipped = est.update(self._clock(), self.readings())
        if flipped and est.overloaded:
            logger.warning(
                "worker overloaded: load %.2f reached --load-threshold %g (%s %.2f); "
                "refusing new calls until it falls below %.2f",
                est.load,
                est.threshold,
                est.why,
                est.components[est.why],
                est.resume_below,
            )
        elif flipped:
            logger.info(
                "worker load %.2f is below %.2f again: taking calls", est.load, est.resume_below
            )
        if flipped or abs(est.reported - self._pushed) >= PUSH_STEP:
            self._pushed = est.reported
            self.pool.load_changed()

    def check(self, request: JobRequest, agent: str, tenant: str) -> Refuse | None:
        """Admission: refuse while overloaded (before the caps are checked)."""
        est = self.estimator
        if not self._active or not est.overloaded:
            return None
        return Refuse(
            RejectReason.OVERLOADED,
            f"measured load {est.load:.2f} >= load_threshold {est.threshold:g} (mostly {est.why})",
        )

    @property
    def cpu_cores(self) -> float:
        """The cores the `cpu` measure counts against (0 with a measure given in code)."""
        return self._cpu.cores if isinstance(self._cpu, ProcessCpu) else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The load block of /snapshot (what `openrtc top` shows). `why` is what sets the
        reported load: the dominant measure, `cap`, or the state when not accepting."""
        est, pool = self.estimator, self.pool
        cap = pool.config.limits.max_sessions
        if not pool.admission_state().takes_calls:
            why = pool.admission_state().value
        elif cap is not None and pool.admitted / cap >= est.reported:
            why = "cap"
        else:
            why = est.why
        return {
            "reported": round(pool.exact_load(), 3),
            "measured": round(est.load, 3),
            "threshold": est.threshold,
            "overloaded": est.overloaded,
            "why": why,
            "components": {name: round(v, 3) for name, v in est.components.items()},
            "latest": {name: round(v, 3) for name, v in est.raw.items()},
            "cpu_cores": round(self.cpu_cores, 3),
        }
