"""Density: how many live voice calls one worker holds, per isolation mode.

For each N and each isolation mode a fresh `openrtc start examples/agents` worker runs as
a subprocess against the loopback dispatch server in this process, with
`OPENRTC_CALL_STATS=1`. N audio-mode simulated calls are kept live: real AgentSessions
with the real Silero VAD hearing real-time speech and silence in 20 ms frames
(`--frame-ms`; a room delivers 50 ms) at the worker's `--audio-input-rate` (16 kHz by
default), digital silence between turns unless `--caller-noise` puts a noise floor on
the line, the real
end-of-turn model, and the fake STT/LLM/TTS of the example agents. The calls come from a
seeded workload (`workload.py`): each has its own agent, number of turns, words, think
time and hold, and they are dispatched with exponential gaps around `--pace`. A call that
ends is replaced at once by the workload's next call, so N calls stay live. Once all N
run and a settle time has passed, a steady window is measured:

- turn latency: per turn, from the end of the caller's speech to the first frame of the
  agent's reply audio playing in its earpiece, as the simulated caller hears it
  (`openrtc.simulation.latency`, 5 ms histogram buckets), p50 and p95 over the window's
  turns, and their increase over a lone call (the N=1 run of the same mode, always run);
- memory: PSS summed over the worker and every process it started, mean over the window;
  per call = (that - the idle worker's PSS, measured before any call) / N;
- CPU: CPU seconds of the same process tree over the window / window seconds, and of it
  each part's (event loops, the VAD's model thread, the end-of-turn model, the rest) from
  every thread's own CPU clock (`openrtc.ops.thread_cpu`);
- loop lag: a 100 ms probe on every event loop that runs calls (the worker's loop, each
  job thread's, each job process's), from the worker's `/snapshot` `call_stats`.

Over the whole run (first dispatch to the end of the window, the span in which the
worker's own warnings can appear) it counts calls that failed, the worker's VAD-lag
warnings in its log, and VAD frames late: frames whose VAD window completed more than
200 ms after they were pushed (or are still waiting that long), the threshold at which
the worker warns that the VAD is behind real time. Caller microphone frames sent more
than 200 ms after their real-time slot, or never sent, are counted over the window.

Modes: `coroutine` (calls as asyncio tasks, with the shared batched VAD, its default),
`coroutine-processes-2` (the same in two worker processes under one parent,
`--processes 2`: two event loops on the box, each child with its own shared VAD, the
server spreading the calls over the two workers they register as),
`coroutine-stock-vad` (the same with livekit's per-call Silero streams, `--no-shared-vad`),
`thread` and `process`. With several processes every number covers all of them: PSS
and CPU are the whole process tree's (parent, fork server, children), loop lag, VAD
frames, turn latency and caller audio are the children's `call_stats` summed (the
parent's /snapshot lists each child's), and the children's log lines (VAD-lag warnings,
failed calls) go to the same log as the parent's. `--modes` runs only some modes.

A mode keeps up at N when no call failed, the p95 turn latency is at most 50 ms above
a lone call's, the worker logged no VAD-lag warning, and loop lag p99 is under 50 ms
(its histogram bucket ends below 50 ms); the summary gives, per mode, the largest N
that kept up and the CPU per call there and at N=25.

A mode stops growing when it no longer keeps up, or no longer fits: the worker dies or
stops answering, N calls cannot be held live, loop lag p99 exceeds 1 s, or the memory or
time budget would be exceeded. The table says which, and why.

    PYTHONPATH=src .venv/bin/python bench/density.py            # full run
    PYTHONPATH=src .venv/bin/python bench/density.py --quick    # N=1,5, short windows
    PYTHONPATH=src .venv/bin/python bench/density.py --modes coroutine-processes-2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from benchkit import (
    Worker,
    call_stats,
    command_line,
    hist_diff,
    hist_percentile,
    machine_info,
    now_iso,
    own_cpu_seconds,
    pin_source,
    server_env,
    snapshot_pids,
    steal_seconds,
    system_busy_seconds,
    worker_snapshots,
    write_result,
)
from rich.console import Console
from rich.table import Table
from workload import AGENTS, Workload

from openrtc.devserver import DispatchServer
from openrtc.simulation.latency import TURN_LATENCY_EDGES_MS
from openrtc.simulation.script import DEFAULT_FRAME_MS

LAG_LIMIT_MS = 1000.0
KEEP_UP_LAG_MS = 50.0
"""A mode keeps up at N only when loop lag p99 is under this."""
KEEP_UP_TURN_MS = 50.0
"""... and its p95 turn latency is at most this much above a lone call's."""
PREDICTION_OUTCOMES = ("runs", "skipped", "dropped", "stale", "failures")
LONE_TURNS = 40
"""The lone call's window lasts until its callers heard this many turns answered (at
least the steady window, at most `LONE_MAX_S`). Every keep-up verdict is judged against
its p95. One caller answers about one turn in 9 s; over the 11 turns of the 100 s window
this replaced, a lone call with 50 ms frames read a p95 of 2535 ms, and over 40 turns
2635 ms (docs/performance.md, "The simulated microphone's frames")."""
LONE_MAX_S = 900.0
TURN_POLL_S = 10.0
"""How often a window that waits for turns reads the worker's count of them."""
LATE_PCT = 1.0
"""Share of late audio (VAD frames or caller microphone) the note calls out."""
VAD_WARNING = re.compile(
    r"VAD is (?P<ms>\d+(?:\.\d+)?) ms behind real time|VAD inference is slower than realtime"
)
"""The worker's own VAD-lag warnings: the shared VAD's and the stock Silero stream's."""
PROCESSES_MODE = "coroutine-processes-2"
MODES: dict[str, list[str]] = {
    "coroutine": ["--isolation", "coroutine", "--shared-vad"],
    PROCESSES_MODE: ["--isolation", "coroutine", "--shared-vad", "--processes", "2"],
    "coroutine-stock-vad": ["--isolation", "coroutine", "--no-shared-vad"],
    "thread": ["--isolation", "thread"],
    "process": ["--isolation", "process"],
}
"""What each benchmarked mode runs: coroutine isolation with the shared batched VAD (its
default) in one process and in two (`--processes 2`: two coroutine pools, each with its
own shared VAD, under one parent), with livekit's stock per-call Silero streams, then
thread and process. `coroutine-processes-K` runs K processes for any K (`--modes`)."""
DEFAULT_NS = [10, 25, 50, 75, 100]
PROCESSES_NS = [25, 50, 75, 100, 125]
"""Several loops are for a whole box's worth of calls: their grid starts higher and goes
past the 100-calls-per-box target."""
_PROCESSES = re.compile(r"coroutine-processes-(?P<k>[1-9][0-9]?)")


def mode_args(mode: str) -> list[str]:
    """The worker flags of a mode; KeyError for a mode that does not exist."""
    if mode in MODES:
        return MODES[mode]
    m = _PROCESSES.fullmatch(mode)
    if m is None:
        raise KeyError(mode)
    return ["--isolation", "coroutine", "--shared-vad", "--processes", m.group("k")]


def default_ns(mode: str) -> list[int]:
    """The N grid a mode runs when --n is not given (N=1 is always added)."""
    return PROCESSES_NS if _PROCESSES.fullmatch(mode) else DEFAULT_NS


OTHER_LOAD_LIMIT = 25.0
"""% of a core used by other processes during a window past which it is measured again."""
MAX_WINDOWS = 3
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass
class Config:
    ns: dict[str, list[int]]
    """Per mode, the N it runs (ascending, 1 included)."""
    modes: list[str]
    window_s: float
    settle_s: float
    pace_s: float
    ramp_timeout_s: float
    time_budget_s: float
    mem_budget_mb: float
    worker_args: list[str]
    workdir: Path
    out: str
    seed: int = 1
    turns: tuple[int, int] = (3, 10)
    pause_s_range: tuple[float, float] = (0.3, 2.0)
    frame_ms: int = DEFAULT_FRAME_MS
    noise_dbfs: float | None = None
    lone_turns: int = LONE_TURNS

    def workload(self) -> Workload:
        return Workload(
            seed=self.seed,
            turns=self.turns,
            pause_s=self.pause_s_range,
            pace_s=self.pace_s,
            frame_ms=self.frame_ms,
            noise_dbfs=self.noise_dbfs,
        )


@dataclass
class Run:
    mode: str
    n: int
    status: str = "held"
    """held: all N live through the window, within the limits; over: held but past a
    limit; failed: N calls could not be held; skipped: not run (see reason)."""
    reason: str = ""
    idle_pss_mb: float | None = None
    pss_mb: float | None = None
    pss_max_mb: float | None = None
    pss_per_call_mb: float | None = None
    processes: int | None = None
    cpu_pct: float | None = None
    cpu_per_call_pct: float | None = None
    bench_cpu_pct: float | None = None
    """CPU of this benchmark process (dispatch server, simulated callers' server side)."""
    other_cpu_pct: float | None = None
    """CPU of everything else on the machine during the window, steal included (should be
    near 0)."""
    steal_pct: float | None = None
    """Of it, time the hypervisor gave other guests (the machine ran slower)."""
    loop_lag_p50_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    snapshot_loop_lag_ms: dict[str, float] | None = None
    load_components: dict[str, float] | None = None
    """The worker's smoothed load measures (/snapshot's `load` block; the largest over its
    processes), mean of the readings at the window's start and end."""
    vad_frames_pushed: int | None = None
    vad_frames_late: int | None = None
    vad_missed_pct: float | None = None
    vad_latency_p99_ms: float | None = None
    mic_frames_due: int | None = None
    mic_frames_late: int | None = None
    mic_missed_pct: float | None = None
    turns_measured: int | None = None
    turn_latency_p50_ms: float | None = None
    turn_latency_p95_ms: float | None = None
    turn_latency_p50_over_lone_ms: float | None = None
    turn_latency_p95_over_lone_ms: float | None = None
    """Increase over the N=1 run of the same mode (a lone call); None without one."""
    turn_predictions: dict[str, int] | None = None
    """The shared end-of-turn thread's requests over the window, by outcome (run, skipped:
    superseded before their turn, dropped, stale: answered after the caller spoke again)."""
    predictions_per_turn: float | None = None
    """End-of-turn model runs over the window per turn the callers heard answered."""
    cpu_parts_pct: dict[str, float] | None = None
    """The window's CPU by the part that spent it, % of a core, summed over the processes
    that run calls (`openrtc.ops.thread_cpu`: loop, vad, turn, other, short_lived); `outside` is the
    rest of `cpu_pct` (a parent or fork server that runs no call)."""
    calls_placed: int | None = None
    calls_completed: int | None = None
    calls_failed: int | None = None
    """Calls that ended in any way but completing, from the first dispatch to the end."""
    vad_lag_warnings: int | None = None
    """Lines of the worker's log saying its VAD is behind real time, over the same span."""
    vad_behind_max_ms: float | None = None
    histograms: dict[str, list[Any]] = field(default_factory=dict)
    """The window's loop-lag and VAD-latency histograms (counts per bucket)."""
    vad_kinds: dict[str, int] = field(default_factory=dict)
    """Which VAD implementation the calls' streams used, by class."""
    live_calls: int | None = None
    vad_streams_open: int | None = None
    window_s: float | None = None
    ramp_s: float | None = None
    seconds: float = 0.0
    failed_jobs: dict[str, int] = field(default_factory=dict)
    kept_up: bool | None = None
    """See `keeps_up`; None when not run."""
    windows: int = 0
    """Windows measured: another is taken when other processes disturbed one (best kept)."""


def _snapshot_lag(snap: dict[str, Any]) -> dict[str, float] | None:
    """The worker's own loop-lag gauges; per process (`<process>:<gauge>`) for several."""
    snaps = worker_snapshots(snap)
    out: dict[str, float] = {}
    for i, s in enumerate(snaps, 1):
        lag = s.get("event_loop_lag_ms")
        if isinstance(lag, dict):
            out.update({(k if len(snaps) == 1 else f"{i}:{k}"): v for k, v in lag.items()})
    return out or None


def _load_components(*snaps: dict[str, Any] | None) -> dict[str, float] | None:
    """Each load measure, the largest over the worker's processes, averaged over `snaps`."""
    seen: dict[str, list[float]] = {}
    for snap in snaps:
        per_snap: dict[str, float] = {}
        for s in worker_snapshots(snap):
            components = (s.get("load") or {}).get("components") or {}
            for name, value in components.items():
                per_snap[name] = max(per_snap.get(name, 0.0), float(value))
        for name, value in per_snap.items():
            seen.setdefault(name, []).append(value)
    return {name: round(sum(v) / len(v), 3) for name, v in seen.items()} or None


def _first_error(server: DispatchServer, jobs: list[str], log: Path) -> str:
    """Why the first call ended: the server's record, else the worker's own log line."""
    ended = sorted(
        (server.job(j) for j in jobs if server.job(j).state.final),
        key=lambda job: job.ended_at or 0.0,
    )
    error = ended[0].error if ended else ""
    if not error and ended:
        error = _logged_failure(log, ended[0].id)
    if any(not w.connected for w in server.workers()):
        error = f"the worker lost its connection to the server; {error}"
    return error[:200] or "no error recorded"


def _logged_failure(log: Path, job_id: str) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        if job_id in line and " failed: " in line:
            return _message(line).split(" failed: ", 1)[-1].strip()
    return ""


def _message(line: str) -> str:
    """A log line's message: a JSON line's `message` field, a plain line as it is."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("message"), str):
                return str(record["message"])
    return line


def _running(server: DispatchServer, jobs: list[str]) -> int:
    return sum(1 for j in jobs if server.job(j).state.value == "running")


def window_numbers(
    run: Run,
    before: dict[str, Any],
    after: dict[str, Any],
    n: int,
    seconds: float,
    run_start: dict[str, Any] | None = None,
) -> None:
    """Fill run's lag, turn-latency and missed-frame numbers from two call_stats readings.

    VAD frames are counted from `run_start` (the reading before the first call) when it is
    given, so they cover the span the worker's VAD-lag warnings cover; the rest is the
    window's.
    """
    lag_edges = after.get("loop_lag_edges_ms") or []
    lag = hist_diff(after.get("loop_lag_hist", []), before.get("loop_lag_hist"))
    run.loop_lag_p50_ms = hist_percentile(lag_edges, lag, 50)
    run.loop_lag_p99_ms = hist_percentile(lag_edges, lag, 99)

    def delta(key: str, since: dict[str, Any] = before) -> int:
        return int(after.get(key, 0)) - int(since.get(key, 0))

    vad_since = before if run_start is None else run_start
    pushed = delta("vad_frames_pushed", vad_since)
    # frames resolved in the span (done) plus what the backlog grew by; late among them
    resolved = delta("vad_frames_done", vad_since) + delta("vad_frames_pending", vad_since)
    late = delta("vad_frames_late", vad_since) + max(0, delta("vad_frames_pending_late", vad_since))
    run.vad_frames_pushed = pushed
    run.vad_frames_late = late
    base = max(pushed, resolved)
    run.vad_missed_pct = round(min(100.0, 100 * late / base), 3) if base else None
    vad_edges = after.get("vad_latency_edges_ms") or []
    vad_hist = hist_diff(after.get("vad_latency_hist", []), vad_since.get("vad_latency_hist"))
    run.vad_latency_p99_ms = hist_percentile(vad_edges, vad_hist, 99)
    cpu_parts(run, before, after, seconds)
    run.histograms = {
        "loop_lag_edges_ms": list(lag_edges),
        "loop_lag": lag,
        "vad_latency_edges_ms": list(vad_edges),
        "vad_latency": vad_hist,
    }
    sent, skipped = delta("mic_frames_sent"), delta("mic_frames_skipped")
    mic_late = delta("mic_frames_late") + skipped
    due = sent + skipped
    run.mic_frames_due = due
    run.mic_frames_late = mic_late
    run.mic_missed_pct = round(100 * mic_late / due, 3) if due else None
    run.vad_streams_open = int(after.get("vad_streams_open", 0))
    run.vad_kinds = dict(after.get("vad_kinds") or {})
    turn_numbers(run, before, after)


def cpu_parts(run: Run, before: dict[str, Any], after: dict[str, Any], seconds: float) -> None:
    """The window's CPU per part (`thread_cpu_s` readings), and what the parts leave out."""
    now, was = after.get("thread_cpu_s"), before.get("thread_cpu_s") or {}
    if not now or seconds <= 0:
        return
    parts = {
        k: round(100 * max(0.0, float(v) - float(was.get(k, 0.0))) / seconds, 1)
        for k, v in now.items()
    }
    if run.cpu_pct is not None:
        parts["outside"] = round(max(0.0, run.cpu_pct - sum(parts.values())), 1)
    run.cpu_parts_pct = parts


def turns_between(before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
    """Turns the callers heard answered between two /snapshot readings (0 without both)."""
    if before is None or after is None:
        return 0
    pids = snapshot_pids(after)
    now, was = call_stats(after, pids), call_stats(before, pids)
    return sum(hist_diff(now.get("turn_latency_hist", []), was.get("turn_latency_hist")))


def turn_numbers(run: Run, before: dict[str, Any], after: dict[str, Any]) -> None:
    """p50/p95 of the turn latencies the callers heard between two readings."""
    if "turn_latency_hist" not in after:
        return
    edges = after.get("turn_latency_edges_ms") or list(TURN_LATENCY_EDGES_MS)
    hist = hist_diff(after["turn_latency_hist"], before.get("turn_latency_hist"))
    run.turns_measured = sum(hist)
    run.turn_latency_p50_ms = hist_percentile(edges, hist, 50)
    run.turn_latency_p95_ms = hist_percentile(edges, hist, 95)
    run.histograms["turn_latency_edges_ms"] = list(edges)
    if "turn_predictions" in after:
        was = before.get("turn_predictions") or {}
        now = after["turn_predictions"]
        run.turn_predictions = {
            k: int(v) - int(was.get(k, 0)) for k, v in now.items() if k in PREDICTION_OUTCOMES
        }
        if run.turns_measured:
            run.predictions_per_turn = round(run.turn_predictions["runs"] / run.turns_measured, 2)
    run.histograms["turn_latency"] = hist


def over_lone(run: Run, lone: Run | None) -> None:
    """Fill the turn latency's increase over a lone call's (the same mode's N=1 run)."""
    if lone is None:
        return
    for q in ("p50", "p95"):
        mine = getattr(run, f"turn_latency_{q}_ms")
        base = getattr(lone, f"turn_latency_{q}_ms")
        if mine is not None and base is not None:
            setattr(run, f"turn_latency_{q}_over_lone_ms", round(mine - base, 1))


def vad_lag_warnings(lines: list[str]) -> tuple[int, float | None]:
    """(VAD-lag warnings among the worker's log lines, the largest lag one reports in ms)."""
    count, worst = 0, None
    for line in lines:
        m = VAD_WARNING.search(line)
        if m is None:
            continue
        count += 1
        if m.group("ms") is not None:
            worst = max(worst or 0.0, float(m.group("ms")))
    return count, worst


async def wait_quiet(worker: Worker, timeout: float) -> None:
    """Until the idle worker (and any warm job processes) stop using CPU."""
    deadline = time.monotonic() + timeout
    last = worker.cpu_seconds()
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = worker.cpu_seconds()
        if now - last < 0.1:
            return
        last = now


class Traffic:
    """Keeps N calls of a workload live on one server: a call that ends is replaced at once.

    Slot i holds the call placed i-th during the ramp, then each of its replacements.
    """

    def __init__(self, server: DispatchServer, n: int, workload: Workload) -> None:
        self.server = server
        self.n = n
        self.plan = workload.calls()
        self.slots: list[str] = []
        self.jobs: list[str] = []
        self.outcomes: dict[str, int] = {}
        self.first_running: set[int] = set()
        self._counted: set[str] = set()

    async def _place(self, slot: int | None = None) -> None:
        call = next(self.plan)
        if slot is None and self.slots:
            await asyncio.sleep(call.gap_s)
        job = await self.server.dispatch(metadata={"agent": call.agent}, simulated_call=call.script)
        self.jobs.append(job.id)
        if slot is None:
            self.slots.append(job.id)
        else:
            self.slots[slot] = job.id

    async def ramp(self) -> None:
        """Place the first N calls, each after its workload gap."""
        for _ in range(self.n):
            await self._place()

    async def keep(self, interval: float = 0.2) -> None:
        """Replace every call that ends, until cancelled."""
        while True:
            for slot, job_id in enumerate(list(self.slots)):
                state = self.server.job(job_id).state
                if state.value == "running" and slot not in self.first_running:
                    self.first_running.add(slot)
                if state.final and job_id not in self._counted:
                    self._counted.add(job_id)
                    self.outcomes[state.value] = self.outcomes.get(state.value, 0) + 1
                    self.first_running.add(slot)
                    await self._place(slot)
            await asyncio.sleep(interval)

    @property
    def ramped(self) -> bool:
        """Every slot has had a call running (or ended): all N were live at least once."""
        return len(self.slots) == self.n and len(self.first_running) == self.n

    @property
    def live(self) -> int:
        return _running(self.server, self.slots)

    @property
    def failed(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k != "success"}


def measured_worker(
    srv: DispatchServer, mode: str, worker_args: list[str], workdir: Path, name: str
) -> Worker:
    """An `openrtc start examples/agents` worker in `mode` with call stats on, logging to
    `workdir/name.log` (not started)."""
    return Worker(
        args=[*mode_args(mode), "--deployment-version", "bench", *worker_args],
        env={**server_env(srv), "OPENRTC_CALL_STATS": "1"},
        log_path=workdir / f"{name}.log",
        name=name,
    )


async def start_quiet(worker: Worker) -> None:
    """Start it, wait until it accepts calls and its start-up CPU has settled."""
    await worker.start()
    await worker.wait_accepting()
    await wait_quiet(worker, 30.0)


async def run_config(cfg: Config, mode: str, n: int, lone: Run | None = None) -> Run:
    run = Run(mode=mode, n=n)
    t_start = time.monotonic()
    async with DispatchServer(dispatch_deadline=cfg.ramp_timeout_s, offer_timeout=10.0) as srv:
        worker = measured_worker(srv, mode, cfg.worker_args, cfg.workdir, f"density-{mode}-{n}")
        try:
            await start_quiet(worker)
            run.idle_pss_mb, _ = worker.pss_mb()
            await _hold_calls(cfg, srv, worker, run, lone)
        except Exception as e:
            run.status, run.reason = "failed", f"{type(e).__name__}: {e}"
        finally:
            await worker.kill()
    run.seconds = round(time.monotonic() - t_start, 1)
    return run


async def _hold_calls(
    cfg: Config, srv: DispatchServer, worker: Worker, run: Run, lone: Run | None
) -> None:
    n = run.n
    traffic = Traffic(srv, n, cfg.workload())
    start_snap = await worker.snapshot(10.0)
    log_mark = worker.log_size()
    keeper = asyncio.create_task(traffic.keep())
    try:
        t0 = time.monotonic()
        await traffic.ramp()
        deadline = t0 + cfg.ramp_timeout_s
        while not traffic.ramped:
            if not worker.alive:
                run.status = "failed"
                run.reason = f"worker exited with {worker.proc and worker.proc.returncode}"
                return
            if time.monotonic() > deadline:
                run.status = "failed"
                run.reason = (
                    f"only {len(traffic.first_running)} of {n} calls ever ran after "
                    f"{cfg.ramp_timeout_s:.0f}s ({traffic.live} running now)"
                )
                return
            await asyncio.sleep(0.5)
        run.ramp_s = round(time.monotonic() - t0, 1)
        await asyncio.sleep(cfg.settle_s)
        best: Run | None = None
        for attempt in range(1, MAX_WINDOWS + 1):
            trial = dataclasses.replace(run, windows=attempt)
            await measure_window(
                worker,
                trial,
                cfg.window_s,
                lambda: traffic.live,
                start_snap,
                min_turns=cfg.lone_turns if n == 1 else 0,
            )
            if best is None or (trial.other_cpu_pct or 0) < (best.other_cpu_pct or 0):
                best = trial
            if trial.status != "held" or (trial.other_cpu_pct or 0) <= OTHER_LOAD_LIMIT:
                best = trial
                break
            console.print(
                f"  window {attempt}: other processes and the hypervisor took "
                f"{trial.other_cpu_pct:.0f}% of a core (steal {fmt(trial.steal_pct, 0)}%); "
                "measuring again"
            )
        assert best is not None
        for f in dataclasses.fields(Run):
            setattr(run, f.name, getattr(best, f.name))
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        run.calls_placed = len(traffic.jobs)
        run.calls_completed = traffic.outcomes.get("success", 0)
        run.failed_jobs = traffic.failed
        run.calls_failed = sum(run.failed_jobs.values())
        run.vad_lag_warnings, run.vad_behind_max_ms = vad_lag_warnings(worker.log_lines(log_mark))
        over_lone(run, lone)
        explain(run, srv, traffic.jobs, worker)


def explain(run: Run, srv: DispatchServer, jobs: list[str], worker: Worker) -> None:
    """Add to the run's note what keeps it from keeping up, in the order a reader asks
    (`jobs`: the run's calls, whose first failure is quoted)."""
    notes = [run.reason] if run.reason else []
    if run.calls_failed:
        why = _first_error(srv, [j for j in jobs if srv.job(j).state.value != "success"],
                           worker.log_path)  # fmt: skip
        notes.append(f"{run.calls_failed} calls failed {run.failed_jobs} ({why})")
    if run.vad_lag_warnings:
        worst = f", up to {run.vad_behind_max_ms:.0f} ms" if run.vad_behind_max_ms else ""
        notes.append(f"the worker warned {run.vad_lag_warnings}x that its VAD is behind{worst}")
    behind = [
        f"{what} {pct:.1f}% late"
        for what, pct in (("VAD frames", run.vad_missed_pct), ("caller audio", run.mic_missed_pct))
        if pct is not None and pct >= LATE_PCT
    ]
    if behind:
        notes.append("cannot keep up in real time: " + ", ".join(behind))
    run.reason = "; ".join(notes)


async def measure_window(
    worker: Worker,
    run: Run,
    window_s: float,
    live: Callable[[], int],
    start_snap: dict[str, Any] | None,
    *,
    min_turns: int = 0,
) -> None:
    """Measure one steady window of `window_s` into `run` (`run.n` calls are meant to be
    live; `live()` says how many are): PSS, CPU, health, and the call_stats of every
    process running calls, from `start_snap` (before the first call) for VAD frames.

    With `min_turns`, the window goes on past `window_s` until the callers heard that
    many turns answered in it (read every `TURN_POLL_S`), or `LONE_MAX_S` passed.
    """
    n = run.n

    before = await worker.snapshot(10.0)
    cpu0, w0 = worker.cpu_seconds(), time.monotonic()
    busy0, own0, steal0 = system_busy_seconds(), own_cpu_seconds(), steal_seconds()
    pss: list[float] = []
    held: list[int] = []
    unhealthy = 0
    polled_at = w0
    while True:
        elapsed = time.monotonic() - w0
        if elapsed >= window_s:
            if not min_turns or before is None or elapsed >= LONE_MAX_S:
                break
            if time.monotonic() - polled_at >= TURN_POLL_S or polled_at == w0:
                polled_at = time.monotonic()
                if turns_between(before, await worker.snapshot(10.0)) >= min_turns:
                    break
        mb, procs = worker.pss_mb()
        pss.append(mb)
        held.append(live())
        run.processes = procs
        if not await worker.healthy():
            unhealthy += 1
        left = window_s - (time.monotonic() - w0)
        await asyncio.sleep(min(2.0, left) if left > 0 else min(2.0, TURN_POLL_S))
    cpu1, w1 = worker.cpu_seconds(), time.monotonic()
    busy1, own1, steal1 = system_busy_seconds(), own_cpu_seconds(), steal_seconds()
    after = await worker.snapshot(10.0)
    seconds = w1 - w0
    other = (busy1 - busy0) - (cpu1 - cpu0) - (own1 - own0)
    run.other_cpu_pct = round(max(0.0, 100 * other / seconds), 1)
    run.steal_pct = round(100 * (steal1 - steal0) / seconds, 1)
    run.bench_cpu_pct = round(100 * (own1 - own0) / seconds, 1)
    run.window_s = round(seconds, 1)
    run.pss_mb = round(sum(pss) / len(pss), 1)
    run.pss_max_mb = round(max(pss), 1)
    if run.idle_pss_mb is not None:
        run.pss_per_call_mb = round((run.pss_mb - run.idle_pss_mb) / n, 2)
        run.idle_pss_mb = round(run.idle_pss_mb, 1)
    run.cpu_pct = round(100 * (cpu1 - cpu0) / seconds, 1)
    run.cpu_per_call_pct = round(run.cpu_pct / n, 2)
    run.live_calls = min([*held, live()])
    if after is not None:
        run.snapshot_loop_lag_ms = _snapshot_lag(after)
    run.load_components = _load_components(before, after)
    if before is not None and after is not None:
        # every process that runs calls now; one restarted meanwhile counts from zero
        pids = snapshot_pids(after)
        window_numbers(
            run,
            call_stats(before, pids),
            call_stats(after, pids),
            n,
            seconds,
            run_start=call_stats(start_snap, pids),
        )

    problems = []
    if not worker.alive:
        problems.append(f"the worker exited with {worker.proc and worker.proc.returncode}")
    if before is None or after is None or unhealthy:
        problems.append(
            f"/snapshot or /healthz did not answer in 5-10 s ({unhealthy} failed health "
            f"checks{'' if after is not None else ', no closing snapshot: no lag or VAD numbers'})"
        )
    if run.loop_lag_p99_ms is not None and run.loop_lag_p99_ms > LAG_LIMIT_MS:
        problems.append(f"loop lag p99 over {LAG_LIMIT_MS:.0f} ms")
    if problems:
        run.status, run.reason = "over", "; ".join(problems)


def keeps_up(run: Run, lone: Run | None) -> bool:
    """What a caller would call keeping up, judged against a lone call of the same mode.

    No call failed, p95 turn latency at most 50 ms above the lone call's, no VAD-lag
    warning from the worker, and loop lag p99 under 50 ms. Lag and latency are histogram
    bucket bounds: a lag p99 in the bucket ending at 50 ms may be 50 ms itself, so only a
    bound below 50 counts as under it.
    """
    lag, p95 = run.loop_lag_p99_ms, run.turn_latency_p95_ms
    base = lone.turn_latency_p95_ms if lone is not None else None
    return (
        run.status == "held"
        and run.calls_failed == 0
        and run.vad_lag_warnings == 0
        and lag is not None
        and lag < KEEP_UP_LAG_MS
        and p95 is not None
        and base is not None
        and p95 <= base + KEEP_UP_TURN_MS
    )


def lone_call(runs: list[Run], mode: str) -> Run | None:
    """The mode's N=1 run, the baseline its turn latencies are judged against."""
    return next(
        (r for r in runs if r.mode == mode and r.n == 1 and r.turn_latency_p95_ms is not None),
        None,
    )


def summary(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per mode: the largest N that kept up, and CPU per call there and at N=25."""
    out: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(r.mode for r in runs):
        mine = [r for r in runs if r.mode == mode and r.status != "skipped"]
        lone = lone_call(runs, mode)
        kept = [r for r in mine if keeps_up(r, lone)]
        best = max(kept, key=lambda r: r.n) if kept else None
        at25 = next((r for r in mine if r.n == 25 and r.cpu_per_call_pct is not None), None)
        first_miss = next((r for r in mine if not keeps_up(r, lone)), None)
        out[mode] = {
            "largest_n_kept_up": best.n if best else None,
            "cpu_per_call_pct_at_largest": best.cpu_per_call_pct if best else None,
            "cpu_per_call_pct_at_25": at25.cpu_per_call_pct if at25 else None,
            "first_n_missed": first_miss.n if first_miss else None,
            "lone_call_turn_latency_p95_ms": lone.turn_latency_p95_ms if lone else None,
            "ns_measured": [r.n for r in mine],
        }
    return out


def _skip_reason(cfg: Config, runs: list[Run], mode: str, n: int, started: float) -> str | None:
    mine = [r for r in runs if r.mode == mode and r.status != "skipped"]
    if mine and mine[-1].status in ("over", "failed"):
        last = mine[-1]
        return f"{mode} stopped at N={last.n}: {last.reason}"
    if mine and mine[-1].kept_up is False:
        last = mine[-1]
        why = last.reason or (
            "no turn was answered in its window"
            if last.turn_latency_p95_ms is None
            else f"loop lag p99 {fmt(last.loop_lag_p99_ms)} ms, turn p95 "
            f"+{fmt(last.turn_latency_p95_over_lone_ms, 0)} ms over a lone call"
        )
        return f"{mode} no longer kept up at N={last.n}: {why}"
    if mine and mine[-1].pss_per_call_mb is not None and mine[-1].idle_pss_mb is not None:
        projected = mine[-1].idle_pss_mb + mine[-1].pss_per_call_mb * n
        if projected > cfg.mem_budget_mb:
            return (
                f"projected PSS {projected:.0f} MB (from N={mine[-1].n}) exceeds the "
                f"memory budget of {cfg.mem_budget_mb:.0f} MB"
            )
    elapsed = time.monotonic() - started
    scaled = [r for r in mine if r.n > 1]  # a lone call's run says little about N calls'
    estimate = scaled[-1].seconds * n / scaled[-1].n if scaled else 0.0
    if elapsed + estimate > cfg.time_budget_s:
        return (
            f"time budget: {elapsed:.0f}s used, this run would take ~{estimate:.0f}s of "
            f"the {cfg.time_budget_s:.0f}s budget"
        )
    return None


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "> max"
    return f"{value:.{digits}f}"


def table(runs: list[Run]) -> Table:
    t = Table(title="Density: N live audio calls per worker (steady window)")
    for col in ("mode", "N", "status", "kept up", "turns", "turn p50 ms", "turn p95 ms",
                "p95 +lone ms", "failed", "VAD warnings", "PSS/call MB", "CPU %",
                "CPU/call %", "lag p99 ms", "VAD late %", "mic late %", "note"):  # fmt: skip
        t.add_column(col, no_wrap=col == "mode")
    for r in runs:
        t.add_row(
            r.mode,
            str(r.n),
            r.status,
            {None: "-", True: "yes", False: "no"}[r.kept_up],
            "n/a" if r.turns_measured is None else str(r.turns_measured),
            fmt(r.turn_latency_p50_ms, 0),
            fmt(r.turn_latency_p95_ms, 0),
            fmt(r.turn_latency_p95_over_lone_ms, 0),
            "n/a" if r.calls_failed is None else str(r.calls_failed),
            "n/a" if r.vad_lag_warnings is None else str(r.vad_lag_warnings),
            fmt(r.pss_per_call_mb, 1),
            fmt(r.cpu_pct, 0),
            fmt(r.cpu_per_call_pct, 1),
            fmt(r.loop_lag_p99_ms, 1),
            fmt(r.vad_missed_pct, 2),
            fmt(r.mic_missed_pct, 2),
            r.reason[:60],
        )
    return t


def summary_table(kept: dict[str, dict[str, Any]]) -> Table:
    t = Table(
        title="Largest N that keeps up (0 failed calls, turn p95 <= lone + 50 ms, "
        "no VAD-lag warning, lag p99 < 50 ms)"
    )
    for col in ("mode", "largest N kept up", "CPU/call % there", "CPU/call % at N=25",
                "first N missed"):  # fmt: skip
        t.add_column(col)
    for mode, k in kept.items():
        t.add_row(
            mode,
            str(k["largest_n_kept_up"] or "none"),
            fmt(k["cpu_per_call_pct_at_largest"], 2),
            fmt(k["cpu_per_call_pct_at_25"], 2),
            str(k["first_n_missed"] or "-"),
        )
    return t


async def main_async(cfg: Config) -> dict[str, Any]:
    started = time.monotonic()
    machine = machine_info()
    runs: list[Run] = []
    for n in sorted({n for ns in cfg.ns.values() for n in ns}):
        for mode in cfg.modes:
            if n not in cfg.ns[mode]:
                continue
            reason = _skip_reason(cfg, runs, mode, n, started)
            if reason is not None:
                runs.append(Run(mode=mode, n=n, status="skipped", reason=reason))
                console.print(f"[yellow]skip {mode} N={n}: {reason}")
                continue
            console.print(f"[bold]{mode} N={n}[/] ...")
            lone = lone_call(runs, mode)
            run = await run_config(cfg, mode, n, lone)
            run.kept_up = keeps_up(run, lone if n > 1 else run)
            runs.append(run)
            console.print(
                f"  {run.status} in {run.seconds:.0f}s: turn p50/p95 "
                f"{fmt(run.turn_latency_p50_ms, 0)}/{fmt(run.turn_latency_p95_ms, 0)} ms "
                f"(+{fmt(run.turn_latency_p95_over_lone_ms, 0)} over a lone call), failed "
                f"{run.calls_failed}, VAD warnings {run.vad_lag_warnings}, PSS "
                f"{fmt(run.pss_mb, 0)} MB, CPU {fmt(run.cpu_pct, 0)}%, lag p99 "
                f"{fmt(run.loop_lag_p99_ms)} ms, VAD late {fmt(run.vad_missed_pct, 3)}%, "
                f"steal {fmt(run.steal_pct, 0)}% {run.reason}"
            )
    duration = round(time.monotonic() - started, 1)
    console.print(table(runs))
    kept = summary(runs)
    console.print(summary_table(kept))
    console.print(f"took {duration:.0f}s")
    busy = [r for r in runs if (r.other_cpu_pct or 0) > 20]
    if busy:
        console.print(
            "[yellow]other processes or the hypervisor (steal) took CPU during "
            + ", ".join(f"{r.mode} N={r.n} ({r.other_cpu_pct:.0f}%)" for r in busy)
            + ": rerun on an idle machine for clean numbers"
        )
    return {
        "benchmark": "density",
        "date": now_iso(),
        "machine": machine,
        "command": command_line(),
        "duration_s": duration,
        "config": {
            "ns": cfg.ns,
            "modes": cfg.modes,
            "mode_args": {m: mode_args(m) for m in cfg.modes},
            "window_s": cfg.window_s,
            "lone_turns": cfg.lone_turns,
            "settle_s": cfg.settle_s,
            "pace_s": cfg.pace_s,
            "ramp_timeout_s": cfg.ramp_timeout_s,
            "time_budget_s": cfg.time_budget_s,
            "mem_budget_mb": cfg.mem_budget_mb,
            "worker_args": cfg.worker_args,
            "workload": cfg.workload().describe(),
            "agents": list(AGENTS),
        },
        "definitions": {
            "pss_mb": "PSS summed over the worker and all its descendants, mean over the window",
            "pss_per_call_mb": "(pss_mb - idle worker PSS before any call) / N",
            "cpu_pct": "process-tree CPU seconds over the window / window seconds, % of a core",
            "other_cpu_pct": "CPU used by anything but the worker tree and this benchmark "
            "during the window, time the hypervisor stole included, % of a core: other "
            "load that may have disturbed the run",
            "steal_pct": "of other_cpu_pct, time the hypervisor gave other guests while "
            "this one wanted to run (/proc/stat steal), % of a core: the machine ran slower",
            "window_s": f"the steady window; the lone call's (N=1) lasts until {cfg.lone_turns} "
            f"turns were answered in it (at most {LONE_MAX_S:.0f} s), as one caller takes "
            "few turns in a window",
            "windows": f"windows measured; a window where other processes used more than "
            f"{OTHER_LOAD_LIMIT:g}% of a core is measured again (at most {MAX_WINDOWS}), "
            "and the least disturbed one is kept",
            "loop_lag": "100 ms sleep overshoot on every loop running calls; histogram bound",
            "load_components": "the worker's smoothed load measures (/snapshot load block, "
            "the largest over its processes), mean of the readings at the window's start "
            "and end; measured whatever --load-threshold says",
            "cpu_parts_pct": "the window's CPU by the thread that spent it, % of a core, over "
            "the processes running calls: loop (event loops running calls), vad (the shared "
            "VAD's model thread), turn (the end-of-turn thread and its model's native "
            "threads), other, short_lived (threads that started and exited between two "
            "readings: the end-of-turn model's helpers); outside: cpu_pct minus those "
            "(processes running no call)",
            "turn_predictions": "the shared end-of-turn thread's requests over the window by "
            "outcome; predictions_per_turn: runs / turns answered in the window",
            "turn_latency": "per turn, end of the caller's speech -> first frame of the "
            "agent's reply audio playing in the caller's earpiece; p50/p95 over the window's "
            "turns as 5 ms histogram bucket bounds; over_lone: minus the same mode's N=1 run",
            "calls_failed": "calls that ended other than completed, first dispatch to window "
            "end (calls that complete are replaced at once by the workload's next call)",
            "vad_lag_warnings": "worker log lines saying its VAD is behind real time (shared "
            "VAD) or slower than real time (stock Silero), first dispatch to window end",
            "vad_missed_pct": "VAD frames whose window completed > 200 ms after the push "
            "(the delay at which the worker warns), or still waiting that long at the end, "
            "over frames pushed from the first dispatch to the end of the window",
            "vad_latency_p99_ms": "push -> window done, p99, as a histogram bucket bound, same "
            "span",
            "mic_missed_pct": "caller microphone frames sent > 200 ms after their real-time "
            "slot, or never sent after a stall, over frames due in the window",
        },
        "summary": kept,
        "runs": [asdict(r) for r in runs],
    }


def parse(argv: list[str] | None = None) -> Config:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--n",
        default=None,
        help="concurrent calls, comma separated, for every mode; N=1 (the lone-call "
        f"baseline) is always run. Default: {','.join(map(str, DEFAULT_NS))}, and "
        f"{','.join(map(str, PROCESSES_NS))} for coroutine-processes-K",
    )
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma separated, from: " + ", ".join(MODES) + " (any coroutine-processes-K)",
    )
    ap.add_argument("--window", type=float, default=20.0, help="steady window, seconds")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after all are live")
    ap.add_argument(
        "--lone-turns",
        type=int,
        default=LONE_TURNS,
        help="the lone call's window lasts until this many turns were answered in it",
    )
    ap.add_argument("--pace", type=float, default=0.2, help="mean seconds between dispatches")
    ap.add_argument("--seed", type=int, default=1, help="the workload's seed")
    ap.add_argument(
        "--turns", type=int, nargs=2, default=[3, 10], metavar=("MIN", "MAX"),
        help="turns per call, drawn per call",
    )  # fmt: skip
    ap.add_argument(
        "--think", type=float, nargs=2, default=[0.3, 2.0], metavar=("MIN", "MAX"),
        help="caller's pause before each turn, seconds, drawn per call",
    )  # fmt: skip
    ap.add_argument("--ramp-timeout", type=float, default=120.0)
    ap.add_argument("--time-budget", type=float, default=60 * 60.0, help="seconds, whole run")
    ap.add_argument(
        "--mem-budget-mb",
        type=float,
        default=psutil.virtual_memory().total / 2**20 * 0.6,
        help="stop a mode whose projected PSS would exceed this",
    )
    ap.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="extra flag for the worker, repeatable (e.g. --worker-arg=--shared-vad)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="keep worker logs here")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=1,5, short windows")
    ap.add_argument("--out", default=None, help="result name under bench/results/")
    ap.add_argument(
        "--frame-ms",
        type=int,
        default=DEFAULT_FRAME_MS,
        help="the simulated callers' microphone frames, ms (a room delivers 50)",
    )
    ap.add_argument(
        "--caller-noise",
        type=float,
        default=None,
        metavar="DBFS",
        help="a steady noise floor on the callers' lines, dBFS RMS (a quiet phone line: "
        "about -60); default: digital silence between turns",
    )
    a = ap.parse_args(argv)
    ns: list[int] | None = None
    if a.n is not None:
        try:
            ns = [int(x) for x in a.n.split(",") if x.strip()]
        except ValueError:
            ap.error(f"--n takes whole numbers separated by commas, got {a.n!r}")
        if not ns or min(ns) < 1:
            ap.error(f"--n needs at least one positive number of calls, got {a.n!r}")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    unknown = [m for m in modes if not _known(m)]
    if unknown or not modes:
        ap.error(
            f"--modes takes some of {', '.join(MODES)} or coroutine-processes-K; got {a.modes!r}"
        )
    try:
        Workload(
            seed=a.seed,
            turns=tuple(a.turns),
            pause_s=tuple(a.think),
            pace_s=a.pace,
            frame_ms=a.frame_ms,
            noise_dbfs=a.caller_noise,
        )
    except ValueError as e:
        ap.error(f"--turns, --think, --pace, --frame-ms or --caller-noise: {e}")
    if a.lone_turns < 1:
        ap.error(f"--lone-turns needs at least 1 turn, got {a.lone_turns}")
    window, settle, lone_turns = a.window, a.settle, a.lone_turns
    if a.quick:
        ns, window, settle, lone_turns = [5], 6.0, 2.0, 2
    per_mode = {m: sorted({1, *(ns if ns is not None else default_ns(m))}) for m in modes}
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="openrtc-density-"))
    return Config(
        ns=per_mode,
        modes=modes,
        window_s=window,
        settle_s=settle,
        pace_s=a.pace,
        ramp_timeout_s=a.ramp_timeout,
        time_budget_s=a.time_budget,
        mem_budget_mb=a.mem_budget_mb,
        worker_args=list(a.worker_arg),
        workdir=workdir,
        out=a.out or ("density-quick" if a.quick else "density"),
        seed=a.seed,
        turns=(a.turns[0], a.turns[1]),
        pause_s_range=(a.think[0], a.think[1]),
        frame_ms=a.frame_ms,
        noise_dbfs=a.caller_noise,
        lone_turns=lone_turns,
    )


def _known(mode: str) -> bool:
    try:
        mode_args(mode)
    except KeyError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    cfg = parse(argv)
    console.print(f"workers run openrtc from a copy of src/: {pin_source()}")
    console.print(f"worker logs in {cfg.workdir}")
    result = asyncio.run(main_async(cfg))
    console.print(f"wrote {write_result(cfg.out, result)}")


if __name__ == "__main__":
    main()
