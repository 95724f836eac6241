"""CPU per live call in a coroutine worker, and whether its VAD keeps up (`--measure`).

A loopback dispatch server runs in this process; the worker (`cpu_worker.py`, started
through `benchkit.Worker`) runs in a child process, so its CPU is the worker's alone, and
takes N audio-mode simulated calls: real AgentSessions with the Silero VAD and the
end-of-turn model hearing real-time 16 kHz PCM, and fake STT/LLM/TTS. Calls talk for a
while, then hold the line. Every run first waits for the rest of the machine to go quiet
and is retried when other processes took more than 0.25 cores during its window. This
module only measures; `cpu_profile.py` attributes the same runs' CPU to components.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchkit import (
    RESULTS,
    Worker,
    command_line,
    machine_info,
    now_iso,
    percentile,
    server_env,
    steal_seconds,
    system_busy_seconds,
    write_result,
)
from cpu_worker import STATS_INTERVAL

WORKER_SCRIPT = Path(__file__).resolve().with_name("cpu_worker.py")
SCRATCH = Path(tempfile.gettempdir()) / "openrtc-profile-calls"
"""Per-run worker stats and logs, and py-spy's raw stacks unless --out says otherwise."""
VAD_WINDOW_S = 512 / 16000
TURNS = (
    "hello there",
    "I would like to book a table",
    "what time do you open",
    "thank you, goodbye",
)


@dataclass
class RunResult:
    calls: int
    shared_vad: bool
    window_s: float
    live_calls: int
    cpu_cores: float
    cpu_per_call_pct: float
    vad_streams: float
    vad_processed_pct: float
    vad_pushed_pct: float
    loop_lag_p50_ms: float
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keeps_up(self) -> bool:
        return self.vad_processed_pct >= 99.0 and self.loop_lag_p99_ms < 50.0


def read_stats(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(raw))
    return lines


def summarize(
    calls: int, shared: bool, lines: list[dict[str, Any]], t0: float, t1: float
) -> RunResult:
    inside = [line for line in lines if t0 <= line["t"] <= t1]
    if len(inside) < 2:
        raise RuntimeError("the worker wrote too few stats lines in the window; is it alive?")
    first, last = inside[0], inside[-1]
    span = last["t"] - first["t"]
    lags = [lag for line in inside[1:] for lag in line["lags"]]
    streams = sum(line["streams"] for line in inside) / len(inside)
    due = streams * span / VAD_WINDOW_S
    done = last["inferences"] - first["inferences"]
    pushed_s = (last["pushes"] - first["pushes"]) * 0.02
    cpu = (last["cpu"] - first["cpu"]) / span
    live = min(line["live_calls"] for line in inside)
    skip = ("t", "cpu", "lags", "live_calls", "threads", "gc")
    pauses = [p for line in inside[1:] for p in line.get("gc", [])]
    full = [d for g, d in pauses if g == 2]
    extra = {k: v for k, v in last.items() if k not in skip}
    if "worst_delay_ms" in last:  # the batcher reports the worst since its last report
        extra["worst_delay_ms"] = max(line["worst_delay_ms"] for line in inside[1:])
    extra["gc"] = {
        "collections": len(pauses),
        "gc_cores": round(sum(d for _, d in pauses) / span, 4),
        "full_collections": len(full),
        "full_max_ms": round(1000 * max(full, default=0.0), 1),
        "young_max_ms": round(1000 * max((d for g, d in pauses if g < 2), default=0.0), 1),
    }
    extra["thread_cores"] = {
        name: round((cpu - first["threads"].get(name, 0.0)) / span, 4)
        for name, cpu in sorted(last["threads"].items())
    }
    return RunResult(
        calls=calls,
        shared_vad=shared,
        window_s=round(span, 2),
        live_calls=live,
        cpu_cores=round(cpu, 4),
        cpu_per_call_pct=round(100 * cpu / max(1, calls), 3),
        vad_streams=round(streams, 1),
        vad_processed_pct=round(100 * done / due, 2) if due else 0.0,
        vad_pushed_pct=round(100 * pushed_s / (streams * span), 2) if streams else 0.0,
        loop_lag_p50_ms=round(1000 * (percentile(lags, 50) or 0.0), 2),
        loop_lag_p99_ms=round(1000 * (percentile(lags, 99) or 0.0), 2),
        loop_lag_max_ms=round(1000 * max(lags, default=0.0), 2),
        extra=extra,
    )


def _script(seconds: float) -> dict[str, Any]:
    return {
        "turns": [TURNS[i % len(TURNS)] for i in range(8)],
        "mode": "audio",
        "pause_s": 1.0,
        "hold_s": seconds,
        "max_duration_s": None,
    }


async def run_calls(
    calls: int,
    shared: bool,
    *,
    window: float,
    warmup: float,
    ramp_per_s: float,
    during: Callable[[int, float], Any] | None = None,
) -> RunResult:
    """One worker, `calls` live audio calls; stats over `window` s after `warmup` s.

    `during(pid, window)`, when given, runs in a thread for the window instead of a sleep
    (the profiler attaches to the worker there).
    """
    from openrtc.devserver import DispatchServer

    SCRATCH.mkdir(parents=True, exist_ok=True)
    stats = SCRATCH / f"stats-{calls}-{'on' if shared else 'off'}.jsonl"
    stats.unlink(missing_ok=True)
    async with DispatchServer(dispatch_deadline=30.0, offer_timeout=5.0) as dev:
        worker = Worker(
            args=[str(stats)],
            env={**server_env(dev), "OPENRTC_SHARED_VAD": "1" if shared else "0"},
            log_path=stats.with_suffix(".log"),
            name=f"cpu-{calls}",
            command=[sys.executable, str(WORKER_SCRIPT)],
        )
        await worker.start()
        try:
            await dev.wait_for_worker(timeout=60)
            hold = ramp_per_s and calls / ramp_per_s
            script = _script(hold + warmup + window + 30)
            jobs = []
            for _ in range(calls):
                jobs.append(await dev.dispatch(metadata={"agent": "bench"}, simulated_call=script))
                await asyncio.sleep(1 / ramp_per_s)
            for job in jobs:
                await dev.wait_job(job.id, {"running", "success", "failed"}, timeout=60)
            await asyncio.sleep(warmup)
            busy0, steal0 = system_busy_seconds(), steal_seconds()
            t0 = time.time()
            if during is not None:
                await asyncio.to_thread(during, worker.pid, window)
            else:
                await asyncio.sleep(window)
            await asyncio.sleep(STATS_INTERVAL * 1.5)
            t1 = time.time()
            busy = (system_busy_seconds() - busy0) / (t1 - t0)
            result = summarize(calls, shared, read_stats(stats), t0, t1)
            result.extra["other_load_cores"] = round(max(0.0, busy - result.cpu_cores), 3)
            result.extra["steal_cores"] = round((steal_seconds() - steal0) / (t1 - t0), 3)
            failed = [j.id for j in jobs if dev.job(j.id).state.value == "failed"]
            result.extra["failed_calls"] = len(failed)
            for job in jobs:
                with contextlib.suppress(Exception):
                    await dev.end_call(job.id)
        finally:
            await worker.stop(30.0)
    return result


def describe(r: RunResult) -> str:
    return (
        f"cpu {100 * r.cpu_cores:5.1f}% of a core ({r.cpu_per_call_pct:.2f}%/call), "
        f"VAD processed {r.vad_processed_pct:.1f}% of due windows "
        f"({r.vad_streams:.0f} streams, audio pushed {r.vad_pushed_pct:.1f}%), "
        f"loop lag p50 {r.loop_lag_p50_ms:.1f} ms p99 {r.loop_lag_p99_ms:.1f} ms "
        f"max {r.loop_lag_max_ms:.0f} ms, live {r.live_calls}, "
        f"failed {r.extra.get('failed_calls', 0)}, "
        f"rest of machine {r.extra.get('other_load_cores', 0):.2f} cores, "
        f"steal {r.extra.get('steal_cores', 0):.2f} "
        f"-> {'keeps up' if r.keeps_up else 'BEHIND'}"
    )


QUIET_CORES = 0.25
"""A run during which the rest of the machine used more CPU than this is retried."""


def wait_for_quiet(max_wait: float = 900.0) -> float:
    """Wait until other processes leave the CPU alone; returns the load seen (cores)."""
    deadline = time.monotonic() + max_wait
    while True:
        before = system_busy_seconds()
        time.sleep(3.0)
        load = (system_busy_seconds() - before) / 3.0
        if load < QUIET_CORES or time.monotonic() > deadline:
            return load
        print(f"  waiting: other processes use {load:.2f} cores", flush=True)


def quiet_run(calls: int, shared: bool, args: argparse.Namespace) -> RunResult:
    """One run on a quiet machine; retried (up to 3 tries) when others took CPU meanwhile."""
    best: RunResult | None = None
    for _ in range(3):
        wait_for_quiet()
        r = asyncio.run(
            run_calls(calls, shared, window=args.seconds, warmup=args.warmup, ramp_per_s=args.ramp)
        )
        if best is None or r.extra["other_load_cores"] < best.extra["other_load_cores"]:
            best = r
        if r.extra["other_load_cores"] < QUIET_CORES:
            break
        print(f"  retrying N={calls}: {describe(r)}", flush=True)
    assert best is not None
    return best


def measure(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.calls.split(",")]
    modes = [m == "on" for m in args.shared_vad.split(",")]
    runs: list[RunResult] = []
    for shared in modes:
        for calls in counts:
            r = quiet_run(calls, shared, args)
            runs.append(r)
            vad = "on " if shared else "off"
            print(f"N={calls:4d} shared VAD {vad}: {describe(r)}", flush=True)
    out = {
        "date": now_iso(),
        "machine": machine_info(),
        "command": command_line(),
        "definition": {
            "cpu_per_call_pct": "worker process CPU over the window / live calls, % of a core",
            "vad_processed_pct": "VAD inferences done / windows due in real time "
            "(live streams x window / 32 ms)",
            "keeps_up": "vad_processed_pct >= 99 and loop_lag_p99_ms < 50",
        },
        "runs": [asdict(r) | {"keeps_up": r.keeps_up} for r in runs],
    }
    path = Path(args.json) if args.json else RESULTS / "cpu.json"
    print(f"wrote {write_result(path.stem, out, path.parent)}")
