"""Density: how many live voice calls one worker holds, per isolation mode.

For each N and each isolation mode a fresh `openrtc start examples/agents` worker runs as
a subprocess against the loopback dispatch server in this process, with
`OPENRTC_CALL_STATS=1`. N audio-mode simulated calls are dispatched: real AgentSessions
with the real Silero VAD hearing real-time 16 kHz speech and silence, the real
end-of-turn model, and the fake STT/LLM/TTS of the example agents. Callers keep talking
(many turns), so every call is live and busy when, with all N running, a steady window
is measured:

- memory: PSS summed over the worker and every process it started, mean over the window;
  per call = (that - the idle worker's PSS, measured before any call) / N;
- CPU: CPU seconds of the same process tree over the window / window seconds;
- loop lag: a 100 ms probe on every event loop that runs calls (the worker's loop, each
  job thread's, each job process's), from the worker's `/snapshot` `call_stats`;
- missed VAD frames: frames whose VAD window completed more than 200 ms after they were
  pushed (or are still waiting that long; livekit's Silero plugin calls that "slower than
  real time"), and caller microphone frames sent more than 200 ms after their real-time
  slot or never sent, over the frames of the window.

Modes: `coroutine` (calls as asyncio tasks, with the shared batched VAD, its default),
`coroutine-stock-vad` (the same with livekit's per-call Silero streams, `--no-shared-vad`),
`thread` and `process`. A mode keeps up at N when all N calls are held, loop lag p99 is
under 50 ms (its histogram bucket ends below 50 ms) and under 1% of VAD frames and of
caller audio are late; the summary gives, per mode, the largest N that kept up and the
CPU per call there and at N=25.

A mode stops growing when it no longer keeps up, or no longer fits: the worker dies or
stops answering, calls fail or cannot all be held live, loop lag p99 exceeds 1 s, or the
memory or time budget would be exceeded. The table says which, and why.

    PYTHONPATH=src .venv/bin/python bench/density.py            # full run, ~8.5 min
    PYTHONPATH=src .venv/bin/python bench/density.py --quick    # N=5, ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from benchkit import (
    Worker,
    command_line,
    hist_diff,
    hist_percentile,
    machine_info,
    now_iso,
    own_cpu_seconds,
    pin_source,
    server_env,
    system_busy_seconds,
    write_result,
)
from rich.console import Console
from rich.table import Table

from openrtc.devserver import DispatchServer

AGENTS = ("sales", "support", "booking")
TURNS = (
    "hello there",
    "I would like to book a table",
    "what time do you open",
    "thank you, goodbye",
)
LAG_LIMIT_MS = 1000.0
KEEP_UP_LAG_MS = 50.0
"""A mode keeps up at N when loop lag p99 is under this and <1% of frames are late."""
KEEP_UP_LATE_PCT = 1.0
MODES: dict[str, list[str]] = {
    "coroutine": ["--isolation", "coroutine", "--shared-vad"],
    "coroutine-stock-vad": ["--isolation", "coroutine", "--no-shared-vad"],
    "thread": ["--isolation", "thread"],
    "process": ["--isolation", "process"],
}
"""What each benchmarked mode runs: coroutine isolation with the shared batched VAD (its
default) and with livekit's stock per-call Silero streams, then thread and process."""
OTHER_LOAD_LIMIT = 25.0
"""% of a core used by other processes during a window past which it is measured again."""
MAX_WINDOWS = 3
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass
class Config:
    ns: list[int]
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
    """CPU of everything else on the machine during the window (should be near 0)."""
    loop_lag_p50_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    snapshot_loop_lag_ms: dict[str, float] | None = None
    vad_frames_pushed: int | None = None
    vad_frames_late: int | None = None
    vad_missed_pct: float | None = None
    vad_latency_p99_ms: float | None = None
    mic_frames_due: int | None = None
    mic_frames_late: int | None = None
    mic_missed_pct: float | None = None
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


def script() -> dict[str, Any]:
    """A caller who keeps talking: far more turns than the run lasts, then holds."""
    return {
        "turns": list(TURNS) * 12,
        "mode": "audio",
        "pause_s": 1.0,
        "hold_s": 600.0,
    }


def _final(server: DispatchServer, jobs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for job_id in jobs:
        state = server.job(job_id).state
        if state.final:
            out[state.value] = out.get(state.value, 0) + 1
    return out


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
            return line.split(" failed: ", 1)[1].strip()
    return ""


def _running(server: DispatchServer, jobs: list[str]) -> int:
    return sum(1 for j in jobs if server.job(j).state.value == "running")


def _stats(snap: dict[str, Any] | None) -> dict[str, Any]:
    return dict((snap or {}).get("call_stats") or {})


def window_numbers(
    run: Run, before: dict[str, Any], after: dict[str, Any], n: int, seconds: float
) -> None:
    """Fill run's lag and missed-frame numbers from two call_stats readings."""
    lag_edges = after.get("loop_lag_edges_ms") or []
    lag = hist_diff(after.get("loop_lag_hist", []), before.get("loop_lag_hist"))
    run.loop_lag_p50_ms = hist_percentile(lag_edges, lag, 50)
    run.loop_lag_p99_ms = hist_percentile(lag_edges, lag, 99)

    def delta(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    pushed = delta("vad_frames_pushed")
    # frames resolved in the window (done) plus what the backlog grew by; late among them
    resolved = delta("vad_frames_done") + delta("vad_frames_pending")
    late = delta("vad_frames_late") + max(0, delta("vad_frames_pending_late"))
    run.vad_frames_pushed = pushed
    run.vad_frames_late = late
    base = max(pushed, resolved)
    run.vad_missed_pct = round(min(100.0, 100 * late / base), 3) if base else None
    vad_edges = after.get("vad_latency_edges_ms") or []
    vad_hist = hist_diff(after.get("vad_latency_hist", []), before.get("vad_latency_hist"))
    run.vad_latency_p99_ms = hist_percentile(vad_edges, vad_hist, 99)
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


async def _wait_quiet(worker: Worker, timeout: float) -> None:
    """Until the idle worker (and any warm job processes) stop using CPU."""
    deadline = time.monotonic() + timeout
    last = worker.cpu_seconds()
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = worker.cpu_seconds()
        if now - last < 0.1:
            return
        last = now


async def run_config(cfg: Config, mode: str, n: int) -> Run:
    run = Run(mode=mode, n=n)
    t_start = time.monotonic()
    async with DispatchServer(dispatch_deadline=cfg.ramp_timeout_s, offer_timeout=10.0) as srv:
        worker = Worker(
            args=[*MODES[mode], "--deployment-version", "bench", *cfg.worker_args],
            env={**server_env(srv), "OPENRTC_CALL_STATS": "1"},
            log_path=cfg.workdir / f"density-{mode}-{n}.log",
            name=f"{mode}-{n}",
        )
        try:
            await worker.start()
            await worker.wait_accepting()
            await _wait_quiet(worker, 30.0)
            run.idle_pss_mb, _ = worker.pss_mb()
            await _hold_calls(cfg, srv, worker, run)
        except Exception as e:
            run.status, run.reason = "failed", f"{type(e).__name__}: {e}"
        finally:
            await worker.kill()
    run.seconds = round(time.monotonic() - t_start, 1)
    return run


async def _hold_calls(cfg: Config, srv: DispatchServer, worker: Worker, run: Run) -> None:
    n = run.n
    jobs: list[str] = []
    t0 = time.monotonic()
    for i in range(n):
        job = await srv.dispatch(
            metadata={"agent": AGENTS[i % len(AGENTS)]}, simulated_call=script()
        )
        jobs.append(job.id)
        await asyncio.sleep(cfg.pace_s)
    deadline = t0 + cfg.ramp_timeout_s
    while True:
        failed = _final(srv, jobs)
        if failed:
            run.status, run.failed_jobs = "failed", failed
            why = _first_error(srv, jobs, worker.log_path)
            run.reason = f"calls ended while ramping up: {failed} ({why})"
            return
        if not worker.alive:
            run.status, run.reason = (
                "failed",
                f"worker exited with {worker.proc and worker.proc.returncode}",
            )
            return
        stats = _stats(await worker.snapshot())
        live = _running(srv, jobs)
        if live == n and int(stats.get("vad_streams_open", 0)) >= n:
            break
        if time.monotonic() > deadline:
            run.status = "failed"
            run.reason = (
                f"only {live} of {n} calls running ({stats.get('vad_streams_open', 0)} VAD "
                f"streams open) after {cfg.ramp_timeout_s:.0f}s"
            )
            return
        await asyncio.sleep(0.5)
    run.ramp_s = round(time.monotonic() - t0, 1)
    await asyncio.sleep(cfg.settle_s)
    best: Run | None = None
    for attempt in range(1, MAX_WINDOWS + 1):
        trial = dataclasses.replace(run, windows=attempt)
        await _measure_window(cfg, srv, worker, trial, jobs)
        if best is None or (trial.other_cpu_pct or 0) < (best.other_cpu_pct or 0):
            best = trial
        if trial.status != "held" or (trial.other_cpu_pct or 0) <= OTHER_LOAD_LIMIT:
            best = trial
            break
        console.print(
            f"  window {attempt}: other processes used {trial.other_cpu_pct:.0f}% of a core; "
            "measuring again"
        )
    assert best is not None
    for f in dataclasses.fields(Run):
        setattr(run, f.name, getattr(best, f.name))


async def _measure_window(
    cfg: Config, srv: DispatchServer, worker: Worker, run: Run, jobs: list[str]
) -> None:
    n = run.n

    before = await worker.snapshot(10.0)
    cpu0, w0 = worker.cpu_seconds(), time.monotonic()
    busy0, own0 = system_busy_seconds(), own_cpu_seconds()
    pss: list[float] = []
    unhealthy = 0
    while time.monotonic() - w0 < cfg.window_s:
        mb, procs = worker.pss_mb()
        pss.append(mb)
        run.processes = procs
        if not await worker.healthy():
            unhealthy += 1
        await asyncio.sleep(max(0.0, min(2.0, cfg.window_s - (time.monotonic() - w0))))
    cpu1, w1 = worker.cpu_seconds(), time.monotonic()
    busy1, own1 = system_busy_seconds(), own_cpu_seconds()
    after = await worker.snapshot(10.0)
    seconds = w1 - w0
    other = (busy1 - busy0) - (cpu1 - cpu0) - (own1 - own0)
    run.other_cpu_pct = round(max(0.0, 100 * other / seconds), 1)
    run.bench_cpu_pct = round(100 * (own1 - own0) / seconds, 1)
    run.window_s = round(seconds, 1)
    run.pss_mb = round(sum(pss) / len(pss), 1)
    run.pss_max_mb = round(max(pss), 1)
    if run.idle_pss_mb is not None:
        run.pss_per_call_mb = round((run.pss_mb - run.idle_pss_mb) / n, 2)
        run.idle_pss_mb = round(run.idle_pss_mb, 1)
    run.cpu_pct = round(100 * (cpu1 - cpu0) / seconds, 1)
    run.cpu_per_call_pct = round(run.cpu_pct / n, 2)
    run.live_calls = _running(srv, jobs)
    if after is not None:
        lag = after.get("event_loop_lag_ms")
        run.snapshot_loop_lag_ms = dict(lag) if isinstance(lag, dict) else None
    if before is not None and after is not None:
        window_numbers(run, _stats(before), _stats(after), n, seconds)

    failed = _final(srv, jobs)
    problems = []
    if failed:
        run.failed_jobs = failed
        why = _first_error(srv, jobs, worker.log_path)
        problems.append(f"calls ended during the window: {failed} ({why})")
    if before is None or after is None or unhealthy:
        problems.append(
            f"/snapshot or /healthz did not answer in 5-10 s ({unhealthy} failed health "
            f"checks{'' if after is not None else ', no closing snapshot: no lag or VAD numbers'})"
        )
    if run.loop_lag_p99_ms is not None and run.loop_lag_p99_ms > LAG_LIMIT_MS:
        problems.append(f"loop lag p99 over {LAG_LIMIT_MS:.0f} ms")
    if problems:
        run.status, run.reason = "over", "; ".join(problems)
    behind = [
        f"{what} {pct:.1f}% late"
        for what, pct in (("VAD frames", run.vad_missed_pct), ("caller audio", run.mic_missed_pct))
        if pct is not None and pct >= 1.0
    ]
    if behind:
        run.reason = "; ".join(
            [r for r in (run.reason, "cannot keep up in real time: " + ", ".join(behind)) if r]
        )


def keeps_up(run: Run) -> bool:
    """All N calls held, loop lag p99 < 50 ms, < 1% of VAD frames and caller audio late.

    Lag is a histogram bucket's upper bound: a p99 in the bucket ending at 50 ms may be
    50 ms itself, so only a bound below 50 counts as under it.
    """
    lag, vad, mic = run.loop_lag_p99_ms, run.vad_missed_pct, run.mic_missed_pct
    return (
        run.status == "held"
        and lag is not None
        and lag < KEEP_UP_LAG_MS
        and vad is not None
        and vad < KEEP_UP_LATE_PCT
        and (mic or 0.0) < KEEP_UP_LATE_PCT
    )


def summary(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per mode: the largest N that kept up, and CPU per call there and at N=25."""
    out: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(r.mode for r in runs):
        mine = [r for r in runs if r.mode == mode and r.status != "skipped"]
        kept = [r for r in mine if keeps_up(r)]
        best = max(kept, key=lambda r: r.n) if kept else None
        at25 = next((r for r in mine if r.n == 25 and r.cpu_per_call_pct is not None), None)
        first_miss = next((r for r in mine if not keeps_up(r)), None)
        out[mode] = {
            "largest_n_kept_up": best.n if best else None,
            "cpu_per_call_pct_at_largest": best.cpu_per_call_pct if best else None,
            "cpu_per_call_pct_at_25": at25.cpu_per_call_pct if at25 else None,
            "first_n_missed": first_miss.n if first_miss else None,
            "ns_measured": [r.n for r in mine],
        }
    return out


def _skip_reason(cfg: Config, runs: list[Run], mode: str, n: int, started: float) -> str | None:
    mine = [r for r in runs if r.mode == mode and r.status != "skipped"]
    if mine and mine[-1].status in ("over", "failed"):
        last = mine[-1]
        return f"{mode} stopped at N={last.n}: {last.reason}"
    if mine and mine[-1].kept_up is False:
        return f"{mode} no longer kept up at N={mine[-1].n}: {mine[-1].reason or 'loop lag'}"
    if mine and mine[-1].pss_per_call_mb is not None and mine[-1].idle_pss_mb is not None:
        projected = mine[-1].idle_pss_mb + mine[-1].pss_per_call_mb * n
        if projected > cfg.mem_budget_mb:
            return (
                f"projected PSS {projected:.0f} MB (from N={mine[-1].n}) exceeds the "
                f"memory budget of {cfg.mem_budget_mb:.0f} MB"
            )
    elapsed = time.monotonic() - started
    estimate = mine[-1].seconds * n / max(1, mine[-1].n) if mine else 0.0
    if elapsed + estimate > cfg.time_budget_s:
        return (
            f"time budget: {elapsed:.0f}s used, this run would take ~{estimate:.0f}s of "
            f"the {cfg.time_budget_s:.0f}s budget"
        )
    return None


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "> max"
    return f"{value:.{digits}f}"


def table(runs: list[Run]) -> Table:
    t = Table(title="Density: N live audio calls per worker (steady window)")
    for col in ("mode", "N", "status", "kept up", "PSS MB", "PSS/call MB", "CPU %",
                "CPU/call %", "lag p50 ms", "lag p99 ms", "VAD late %", "mic late %",
                "note"):  # fmt: skip
        t.add_column(col)
    for r in runs:
        t.add_row(
            r.mode,
            str(r.n),
            r.status,
            {None: "-", True: "yes", False: "no"}[r.kept_up],
            _fmt(r.pss_mb, 0),
            _fmt(r.pss_per_call_mb, 1),
            _fmt(r.cpu_pct, 0),
            _fmt(r.cpu_per_call_pct, 1),
            _fmt(r.loop_lag_p50_ms, 1),
            _fmt(r.loop_lag_p99_ms, 1),
            _fmt(r.vad_missed_pct, 2),
            _fmt(r.mic_missed_pct, 2),
            r.reason[:60],
        )
    return t


def summary_table(kept: dict[str, dict[str, Any]]) -> Table:
    t = Table(title="Largest N that keeps up (lag p99 < 50 ms, < 1% of audio late)")
    for col in ("mode", "largest N kept up", "CPU/call % there", "CPU/call % at N=25",
                "first N missed"):  # fmt: skip
        t.add_column(col)
    for mode, k in kept.items():
        t.add_row(
            mode,
            str(k["largest_n_kept_up"] or "none"),
            _fmt(k["cpu_per_call_pct_at_largest"], 2),
            _fmt(k["cpu_per_call_pct_at_25"], 2),
            str(k["first_n_missed"] or "-"),
        )
    return t


async def main_async(cfg: Config) -> dict[str, Any]:
    started = time.monotonic()
    machine = machine_info()
    runs: list[Run] = []
    for n in cfg.ns:
        for mode in cfg.modes:
            reason = _skip_reason(cfg, runs, mode, n, started)
            if reason is not None:
                runs.append(Run(mode=mode, n=n, status="skipped", reason=reason))
                console.print(f"[yellow]skip {mode} N={n}: {reason}")
                continue
            console.print(f"[bold]{mode} N={n}[/] ...")
            run = await run_config(cfg, mode, n)
            run.kept_up = keeps_up(run)
            runs.append(run)
            console.print(
                f"  {run.status} in {run.seconds:.0f}s: PSS {_fmt(run.pss_mb, 0)} MB, "
                f"CPU {_fmt(run.cpu_pct, 0)}%, lag p99 {_fmt(run.loop_lag_p99_ms)} ms, "
                f"VAD late {_fmt(run.vad_missed_pct, 2)}% {run.reason}"
            )
    duration = round(time.monotonic() - started, 1)
    console.print(table(runs))
    kept = summary(runs)
    console.print(summary_table(kept))
    console.print(f"took {duration:.0f}s")
    busy = [r for r in runs if (r.other_cpu_pct or 0) > 20]
    if busy:
        console.print(
            "[yellow]other processes used CPU during "
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
            "mode_args": {m: MODES[m] for m in cfg.modes},
            "window_s": cfg.window_s,
            "settle_s": cfg.settle_s,
            "pace_s": cfg.pace_s,
            "ramp_timeout_s": cfg.ramp_timeout_s,
            "time_budget_s": cfg.time_budget_s,
            "mem_budget_mb": cfg.mem_budget_mb,
            "worker_args": cfg.worker_args,
            "script": script(),
            "agents": list(AGENTS),
        },
        "definitions": {
            "pss_mb": "PSS summed over the worker and all its descendants, mean over the window",
            "pss_per_call_mb": "(pss_mb - idle worker PSS before any call) / N",
            "cpu_pct": "process-tree CPU seconds over the window / window seconds, % of a core",
            "other_cpu_pct": "CPU used by anything but the worker tree and this benchmark "
            "during the window, % of a core: other load that may have disturbed the run",
            "windows": f"windows measured; a window where other processes used more than "
            f"{OTHER_LOAD_LIMIT:g}% of a core is measured again (at most {MAX_WINDOWS}), "
            "and the least disturbed one is kept",
            "loop_lag": "100 ms sleep overshoot on every loop running calls; histogram bound",
            "vad_missed_pct": "VAD frames whose window completed > 200 ms after the push "
            "(livekit's own 'slower than real time' threshold), or still waiting that long at "
            "the end, over frames pushed in the window",
            "vad_latency_p99_ms": "push -> window done, p99, as a histogram bucket bound",
            "mic_missed_pct": "caller microphone frames sent > 200 ms after their real-time "
            "slot, or never sent after a stall, over frames due in the window",
        },
        "summary": kept,
        "runs": [asdict(r) for r in runs],
    }


def parse(argv: list[str] | None = None) -> Config:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", default="10,25,50,75,100", help="concurrent calls, comma separated")
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma separated, from: " + ", ".join(MODES),
    )
    ap.add_argument("--window", type=float, default=20.0, help="steady window, seconds")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after all are live")
    ap.add_argument("--pace", type=float, default=0.2, help="seconds between dispatches")
    ap.add_argument("--ramp-timeout", type=float, default=120.0)
    ap.add_argument("--time-budget", type=float, default=20 * 60.0, help="seconds, whole run")
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
    ap.add_argument("--quick", action="store_true", help="smoke run: N=5, short window")
    ap.add_argument("--out", default=None, help="result name under bench/results/")
    a = ap.parse_args(argv)
    try:
        ns = [int(x) for x in a.n.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--n takes whole numbers separated by commas, got {a.n!r}")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if not ns or min(ns) < 1:
        ap.error(f"--n needs at least one positive number of calls, got {a.n!r}")
    if unknown or not modes:
        ap.error(f"--modes takes some of {', '.join(MODES)}; got {a.modes!r}")
    window, settle = a.window, a.settle
    if a.quick:
        ns, window, settle = [5], 6.0, 2.0
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="openrtc-density-"))
    return Config(
        ns=ns,
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
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse(argv)
    console.print(f"workers run openrtc from a copy of src/: {pin_source()}")
    console.print(f"worker logs in {cfg.workdir}")
    result = asyncio.run(main_async(cfg))
    console.print(f"wrote {write_result(cfg.out, result)}")


if __name__ == "__main__":
    main()
