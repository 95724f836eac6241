"""Overload: a burst of calls far past what one box holds, offered to a worker with no cap.

The target: offered 130 calls within 5 s with no cap, 0 calls fail, at least 75
are admitted, the admitted calls keep up, and the surplus is refused at offer time.

One `openrtc start examples/agents` worker runs with its default settings (no cap,
default `--load-threshold`, coroutine isolation, shared VAD) as a subprocess against the
loopback dispatch server in this process, with `OPENRTC_CALL_STATS=1`; with
`--processes K` (K > 1) the worker is one parent with K children that register as K
workers, and the server spreads the burst over them. The burst starts once the server
sees every worker report itself available (a worker that just started may still report
itself full while its smoothed load settles). The burst is the first `--offered`
calls of density's seeded workload (`workload.py`: same agents, turns, words and think
times), dispatched at the workload's exponential gaps scaled so the last goes out
`--within` seconds after the first. Each call holds the line, silent, for its own hold
plus the burst, the ramp allowance (90 s), settle and window time after its last reply,
so every admitted call is live through the steady window; no ended call is replaced
(nothing is offered after the burst).

Every dispatch has a short deadline (`--offer-deadline`, 1 s): the server offers the job
to a worker that reports itself available; a refusal or a worker that reports itself full
makes the server wait for a status change (at most 0.5 s) and offer it again within the
deadline, after which the job ends `unserved` at the server. So a refused call is never
admitted late, when calls end; on a real LiveKit server it would go to another worker.
A call not admitted was either refused in an availability answer, or never offered
because every worker reported itself full (load 1.0, `WS_FULL`), or its offer went
unanswered within the deadline; each is counted, and the worker's refusal reasons are
read from its /snapshot (`rejected_total`, summed over its processes).

Once the burst is over and every admitted call runs, and a settle time has passed, one
steady window is measured with density's code (`density.measure_window`): turn latency
p50/p95 and over a lone call (a separate worker of the same shape with one call, as
density's N=1), loop lag, VAD frames late, caller audio late, PSS and CPU of the whole
process tree. Failed calls (admitted calls that ended other than completed) and the
worker's VAD-lag warnings are counted from the first dispatch to the end of the window.
The admitted calls keep up by density's definition (`density.keeps_up`).

    PYTHONPATH=src .venv/bin/python bench/overload.py                  # --processes 1,2
    PYTHONPATH=src .venv/bin/python bench/overload.py --processes 2
    PYTHONPATH=src .venv/bin/python bench/overload.py --quick          # smoke: 12 calls
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from benchkit import (
    Worker,
    command_line,
    machine_info,
    now_iso,
    percentile,
    pin_source,
    rejected_total,
    snapshot_pids,
    write_result,
)
from density import (
    LONE_TURNS,
    Config,
    Run,
    console,
    explain,
    fmt,
    keeps_up,
    measure_window,
    measured_worker,
    mode_args,
    over_lone,
    run_config,
    start_quiet,
    vad_lag_warnings,
)
from workload import Workload

from openrtc.devserver import DispatchServer
from openrtc.devserver.records import WS_AVAILABLE, WS_FULL, JobRecord, JobState

OFFERED = 130
WITHIN_S = 5.0
ADMITTED_TARGET = 75
OFFER_DEADLINE_S = 1.0
RAMP_TIMEOUT_S = 90.0
"""How long admitted calls get to start running after the burst."""


@dataclass
class OverloadConfig:
    offered: int
    within_s: float
    offer_deadline_s: float
    processes: list[int]
    window_s: float
    settle_s: float
    workdir: Path
    out: str
    worker_args: list[str]
    workload: Workload

    def mode(self, processes: int) -> str:
        return "coroutine" if processes == 1 else f"coroutine-processes-{processes}"

    def density(self, processes: int) -> Config:
        """Density's settings for the lone-call run of the same worker shape."""
        return Config(
            ns={self.mode(processes): [1]},
            modes=[self.mode(processes)],
            window_s=self.window_s,
            settle_s=self.settle_s,
            pace_s=self.workload.pace_s,
            ramp_timeout_s=RAMP_TIMEOUT_S,
            time_budget_s=float("inf"),
            mem_budget_mb=float("inf"),
            worker_args=self.worker_args,
            workdir=self.workdir,
            out=self.out,
            seed=self.workload.seed,
            turns=self.workload.turns,
            pause_s_range=self.workload.pause_s,
        )


@dataclass
class Burst:
    processes: int
    offered: int = 0
    dispatch_span_s: float | None = None
    """First to last dispatch."""
    admitted: int = 0
    """Jobs a worker took (assigned), whatever happened to them after."""
    not_admitted: int = 0
    refused_by_answer: int = 0
    """Not admitted; at least one offer was answered "not available"."""
    never_offered_full: int = 0
    """Not admitted and never offered: every worker reported itself full the whole time."""
    offer_unanswered: int = 0
    """Not admitted; offers went unanswered within the deadline (none refused)."""
    not_admitted_other: int = 0
    admitted_after_refusal: int = 0
    """Admitted on a second offer within the deadline after a refusal."""
    refusal_reasons: dict[str, int] = field(default_factory=dict)
    """The worker's rejected_total over the burst, by reason, summed over its processes."""
    worker_full_after_s: float | None = None
    """First dispatch -> the server first saw a worker report itself full."""
    admitted_before_full: int | None = None
    calls_failed: int = 0
    calls_completed: int = 0
    calls_live_at_end: int = 0
    failed_jobs: dict[str, int] = field(default_factory=dict)
    answer_p99_ms: float | None = None
    kept_up: bool | None = None
    keep_up: Run | None = None
    """The admitted calls' steady window, measured as density measures N calls."""
    lone: Run | None = None
    status: str = "run"
    reason: str = ""
    seconds: float = 0.0


def plan(cfg: OverloadConfig) -> list[tuple[float, str, dict[str, Any]]]:
    """(seconds after the first dispatch, agent, call script) for each offered call.

    The workload's gaps are kept in proportion and scaled so the last call goes out
    `within_s` after the first; each call's hold is lengthened so it stays live (silent)
    through the steady window.
    """
    calls = list(islice(cfg.workload.calls(), cfg.offered))
    gaps = [0.0] + [c.gap_s for c in calls[1:]]
    span = sum(gaps)
    scale = cfg.within_s / span if span > 0 else 0.0
    extra = cfg.within_s + cfg.settle_s + cfg.window_s + RAMP_TIMEOUT_S
    out, at = [], 0.0
    for gap, call in zip(gaps, calls, strict=True):
        at += gap * scale
        script = {**call.script, "hold_s": round(float(call.script["hold_s"]) + extra, 2)}
        out.append((round(at, 3), call.agent, script))
    return out


def classify(burst: Burst, jobs: list[JobRecord]) -> None:
    """Fill the burst's admitted / not-admitted counts from the server's job records."""
    burst.offered = len(jobs)
    for job in jobs:
        refused = any(o.available is False and o.answered_in_ms is not None for o in job.offers)
        if job.assigned_at is not None or job.worker_id is not None:
            burst.admitted += 1
            burst.admitted_after_refusal += int(refused)
            continue
        burst.not_admitted += 1
        if refused:
            burst.refused_by_answer += 1
        elif not job.offers and job.state is JobState.UNSERVED:
            burst.never_offered_full += 1
        elif job.offers:
            burst.offer_unanswered += 1
        else:
            burst.not_admitted_other += 1


def outcomes(burst: Burst, jobs: list[JobRecord]) -> None:
    """How the admitted calls ended so far: failed, completed, or still live."""
    failed: dict[str, int] = {}
    for job in jobs:
        if job.worker_id is None:
            continue
        if job.state is JobState.SUCCESS:
            burst.calls_completed += 1
        elif job.state.final:
            failed[job.state.value] = failed.get(job.state.value, 0) + 1
        else:
            burst.calls_live_at_end += 1
    burst.failed_jobs = failed
    burst.calls_failed = sum(failed.values())


def _answer_p99(jobs: list[JobRecord]) -> float | None:
    return percentile(
        (o.answered_in_ms for j in jobs for o in j.offers if o.answered_in_ms is not None), 99
    )


async def _until_available(srv: DispatchServer, count: int, timeout: float) -> bool:
    """Until the server sees `count` workers that report themselves available: a worker
    still settling after its start (its smoothed load high) would refuse the first calls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [w for w in srv.workers() if w.connected]
        if len(workers) >= count and all(w.status == WS_AVAILABLE for w in workers):
            return True
        await asyncio.sleep(0.2)
    return False


def _full_after(srv: DispatchServer, since: float) -> float | None:
    for e in srv.events():
        if e.kind == "worker_status" and e.fields.get("status") == WS_FULL and e.ts >= since:
            return round(e.ts - since, 2)
    return None


async def run_burst(cfg: OverloadConfig, processes: int, lone: Run | None) -> Burst:
    burst = Burst(processes=processes, lone=lone)
    mode = cfg.mode(processes)
    started = time.monotonic()
    async with DispatchServer(
        dispatch_deadline=cfg.offer_deadline_s, offer_timeout=cfg.offer_deadline_s
    ) as srv:
        worker = measured_worker(srv, mode, cfg.worker_args, cfg.workdir, f"overload-{processes}")
        try:
            await start_quiet(worker)
            if not await _until_available(srv, processes, 60.0):
                burst.reason = "a worker still reported itself full when the burst began"
            run = Run(mode=mode, n=0)
            run.idle_pss_mb, _ = worker.pss_mb()
            burst.keep_up = run
            await _offer_and_hold(cfg, srv, worker, burst, run)
        except Exception as e:
            burst.status, burst.reason = "failed", f"{type(e).__name__}: {e}"
        finally:
            await worker.kill()
    burst.seconds = round(time.monotonic() - started, 1)
    return burst


async def _offer_and_hold(
    cfg: OverloadConfig, srv: DispatchServer, worker: Worker, burst: Burst, run: Run
) -> None:
    start_snap = await worker.snapshot(10.0)
    log_mark = worker.log_size()
    calls = plan(cfg)
    jobs: list[JobRecord] = []
    t0, wall0 = time.monotonic(), time.time()
    for at, agent, script in calls:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        jobs.append(await srv.dispatch(metadata={"agent": agent}, simulated_call=script))
    burst.dispatch_span_s = round(time.monotonic() - t0, 2)
    # every offer settled: taken, or given up at the deadline
    deadline = time.monotonic() + cfg.offer_deadline_s + 5.0
    while any(j.state is JobState.PENDING for j in jobs) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    after_offers = await worker.snapshot(10.0)
    classify(burst, jobs)
    pids = snapshot_pids(after_offers)
    before = rejected_total(start_snap, pids)
    burst.refusal_reasons = {
        k: v - before.get(k, 0)
        for k, v in rejected_total(after_offers, pids).items()
        if v - before.get(k, 0)
    }
    burst.answer_p99_ms = _answer_p99(jobs)
    admitted = [j for j in jobs if j.worker_id is not None]
    run.n = len(admitted)
    try:
        if not admitted:
            run.status, run.reason = "failed", "no call was admitted"
            return
        ramp_until = time.monotonic() + RAMP_TIMEOUT_S
        while any(j.state is JobState.ASSIGNED for j in admitted):
            if not worker.alive or time.monotonic() > ramp_until:
                run.status = "failed"
                run.reason = (
                    f"only {sum(j.state is JobState.RUNNING for j in admitted)} of "
                    f"{len(admitted)} admitted calls ran after {RAMP_TIMEOUT_S:.0f}s"
                )
                return
            await asyncio.sleep(0.5)
        run.ramp_s = round(time.monotonic() - t0, 1)
        await asyncio.sleep(cfg.settle_s)

        def live() -> int:
            return sum(1 for j in admitted if j.state is JobState.RUNNING)

        await measure_window(worker, run, cfg.window_s, live, start_snap)
    finally:
        burst.worker_full_after_s = _full_after(srv, wall0)
        if burst.worker_full_after_s is not None:
            cut = wall0 + burst.worker_full_after_s
            burst.admitted_before_full = sum(
                1 for j in jobs if j.assigned_at is not None and j.assigned_at <= cut
            )
        outcomes(burst, jobs)
        run.calls_placed = len(admitted)
        run.calls_completed = burst.calls_completed
        run.failed_jobs = burst.failed_jobs
        run.calls_failed = burst.calls_failed
        run.vad_lag_warnings, run.vad_behind_max_ms = vad_lag_warnings(worker.log_lines(log_mark))
        over_lone(run, burst.lone)
        explain(run, srv, [j.id for j in admitted], worker)
        burst.kept_up = keeps_up(run, burst.lone)


async def main_async(cfg: OverloadConfig) -> dict[str, Any]:
    started = time.monotonic()
    machine = machine_info()
    bursts: list[Burst] = []
    for processes in cfg.processes:
        mode = cfg.mode(processes)
        console.print(f"[bold]{mode}: a lone call[/] ...")
        lone = await run_config(cfg.density(processes), mode, 1)
        lone.kept_up = keeps_up(lone, lone)
        console.print(
            f"  lone call turn p50/p95 {fmt(lone.turn_latency_p50_ms, 0)}/"
            f"{fmt(lone.turn_latency_p95_ms, 0)} ms {lone.reason}"
        )
        console.print(f"[bold]{mode}: {cfg.offered} calls offered within {cfg.within_s:g}s[/] ...")
        burst = await run_burst(cfg, processes, lone)
        bursts.append(burst)
        k = burst.keep_up or Run(mode=mode, n=0)
        console.print(
            f"  {burst.status}: admitted {burst.admitted}, not admitted {burst.not_admitted} "
            f"(refused {burst.refused_by_answer}, never offered: worker full "
            f"{burst.never_offered_full}, unanswered {burst.offer_unanswered}), reasons "
            f"{burst.refusal_reasons}; failed {burst.calls_failed}; kept up {burst.kept_up}: "
            f"turn p50/p95 {fmt(k.turn_latency_p50_ms, 0)}/{fmt(k.turn_latency_p95_ms, 0)} ms "
            f"(+{fmt(k.turn_latency_p95_over_lone_ms, 0)} over a lone call), VAD warnings "
            f"{k.vad_lag_warnings}, lag p99 {fmt(k.loop_lag_p99_ms)} ms, VAD late "
            f"{fmt(k.vad_missed_pct, 3)}%, CPU {fmt(k.cpu_pct, 0)}% {burst.reason} {k.reason}"
        )
    duration = round(time.monotonic() - started, 1)
    console.print(f"took {duration:.0f}s")
    return {
        "benchmark": "overload",
        "date": now_iso(),
        "machine": machine,
        "command": command_line(),
        "duration_s": duration,
        "config": {
            "offered": cfg.offered,
            "within_s": cfg.within_s,
            "offer_deadline_s": cfg.offer_deadline_s,
            "processes": cfg.processes,
            "window_s": cfg.window_s,
            "lone_turns": LONE_TURNS,
            "settle_s": cfg.settle_s,
            "worker_args": cfg.worker_args,
            "mode_args": {cfg.mode(p): mode_args(cfg.mode(p)) for p in cfg.processes},
            "workload": cfg.workload.describe(),
        },
        "definitions": {
            "admitted": "jobs a worker took (the server assigned them)",
            "refused_by_answer": "not admitted; a worker answered an offer 'not available'",
            "never_offered_full": "not admitted; never offered, as every worker reported "
            "itself full (WS_FULL) until the offer deadline",
            "offer_unanswered": "not admitted; offers were not answered within the deadline",
            "refusal_reasons": "the worker's /snapshot rejected_total over the burst, by "
            "reason, summed over its processes",
            "worker_full_after_s": "first dispatch -> the server first saw a worker report "
            "itself full",
            "calls_failed": "admitted calls that ended other than completed, first dispatch "
            "to window end",
            "keep_up": "the admitted calls' steady window, as bench/density.py measures N "
            "calls (n = admitted); lone: the same worker shape with one call",
        },
        "runs": [asdict(b) for b in bursts],
    }


def parse(argv: list[str] | None = None) -> OverloadConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--offered", type=int, default=None, help=f"calls in the burst ({OFFERED})")
    ap.add_argument(
        "--within", type=float, default=None, help=f"seconds, first to last ({WITHIN_S:g})"
    )
    ap.add_argument(
        "--offer-deadline",
        type=float,
        default=OFFER_DEADLINE_S,
        help="seconds the server keeps offering one call before it ends unserved",
    )
    ap.add_argument(
        "--processes",
        default="1,2",
        help="worker processes (openrtc start --processes K), comma separated; one burst each",
    )
    ap.add_argument("--window", type=float, default=None, help="steady window, seconds (20)")
    ap.add_argument("--settle", type=float, default=None, help="seconds after every call runs (5)")
    ap.add_argument("--seed", type=int, default=1, help="the workload's seed")
    ap.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="extra flag for the worker, repeatable (the target is with default settings)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="keep worker logs here")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 12 calls in 2 s, 6 s window (flags given still apply)",
    )
    ap.add_argument("--out", default=None, help="result name under bench/results/")
    a = ap.parse_args(argv)
    try:
        processes = [int(x) for x in a.processes.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--processes takes whole numbers separated by commas, got {a.processes!r}")
    if not processes or min(processes) < 1 or max(processes) > 64:
        ap.error(f"--processes takes numbers from 1 to 64, got {a.processes!r}")
    defaults = (12, 2.0, 6.0, 2.0) if a.quick else (OFFERED, WITHIN_S, 20.0, 5.0)
    given = (a.offered, a.within, a.window, a.settle)
    chosen = [d if g is None else g for g, d in zip(given, defaults, strict=True)]
    offered, within, window, settle = chosen
    if offered < 1:
        ap.error(f"--offered must be at least 1, got {offered}")
    for flag, value in (("--within", within), ("--offer-deadline", a.offer_deadline),
                        ("--window", window), ("--settle", settle)):  # fmt: skip
        if value < 0 or (flag in ("--offer-deadline", "--window") and value == 0):
            ap.error(f"{flag} must be a positive number of seconds, got {value}")
    return OverloadConfig(
        offered=int(offered),
        within_s=within,
        offer_deadline_s=a.offer_deadline,
        processes=processes,
        window_s=window,
        settle_s=settle,
        workdir=a.workdir or Path(tempfile.mkdtemp(prefix="openrtc-overload-")),
        out=a.out or ("overload-quick" if a.quick else "overload"),
        worker_args=list(a.worker_arg),
        workload=Workload(seed=a.seed),
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse(argv)
    console.print(f"workers run openrtc from a copy of src/: {pin_source()}")
    console.print(f"worker logs in {cfg.workdir}")
    result = asyncio.run(main_async(cfg))
    console.print(f"wrote {write_result(cfg.out, result)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
