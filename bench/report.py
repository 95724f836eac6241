"""Write docs/benchmarks.md from bench/results/{density,admission,deploy,overload}.json
(and a density run on uvloop against the same run on asyncio: `LOOP_PAIRS`).

The page is generated, never edited by hand: rerun a benchmark, then this script. Each
section gives the machine, the date, the exact command, the table, and a verdict line per
target that says plainly whether it was met and, when not, by how much and why.

    PYTHONPATH=src .venv/bin/python bench/report.py
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openrtc.admission import ANSWER_BUCKETS_MS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"

PSS_RATIO_TARGET = 5.0
LAG_P99_TARGET_MS = 50.0
ANSWER_P99_TARGET_MS = 5.0
FULL_P99_TARGET_MS = 100.0
EXIT_P99_TARGET_MS = 500.0
DEPLOYS_TARGET = 10
STOCK_CPU_PER_CALL_PCT = 5.0
"""CPU per live call of the stock per-call Silero path when the shared VAD was built."""
CPU_PER_CALL_TARGET_PCT = 1.0
KEPT_UP_TARGET_N = 100
PSS_PER_CALL_TARGET_MB = 3.0
OVERLOAD_OFFERED = 130
LATENCY_LAST_EDGE_MS = 5000.0
"""The last bucket edge of the loop-lag and turn-latency histograms the results hold."""
OVERLOAD_WITHIN_S = 5.0
OVERLOAD_ADMITTED = 75
OVERLOAD_TARGET = (
    f"offered {OVERLOAD_OFFERED} calls within {OVERLOAD_WITHIN_S:g} s with no cap: 0 failed, "
    f"at least {OVERLOAD_ADMITTED} admitted and keeping up, the surplus refused at offer time"
)
KEEP_UP = (
    "0 failed calls, p95 turn latency at most 50 ms above a lone call's, no VAD-lag "
    "warning from the worker, loop lag p99 < 50 ms"
)
"""What keeping up at N means (bench/density.py `keeps_up`)."""


@dataclass(frozen=True)
class Verdict:
    target: str
    met: bool | None
    """None: not measured."""
    detail: str

    def line(self) -> str:
        mark = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[self.met]
        return f"- **{mark}**: {self.target}. {self.detail}"


# --- rendering ------------------------------------------------------------------------------


def cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "> max"
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; every cell goes through `cell()`."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} columns: {row!r}")
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join(" --- " for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    load = m.get("load_avg_at_start")
    machine = (
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('ram_gb', '?')} GB RAM; "
        f"Python {m.get('python', '?')}, livekit-agents {m.get('livekit_agents', '?')}, "
        f"openrtc {_tree(m.get('openrtc'))}"
        + (f"; load average at start {load[0]}" if load else "")
    )
    lines = [
        f"- machine: {machine}",
        f"- date: {result.get('date', '?')}; took {cell(result.get('duration_s'), 0)} s",
        f"- command: `{result.get('command', '?')}`",
    ]
    other = result.get("other_cpu_pct")
    if other is None:
        per_run = [r.get("other_cpu_pct") for r in result.get("runs", [])]
        other = max((v for v in per_run if v is not None), default=None)
        scope = "the busiest steady window"
    else:
        scope = "the run"
    if other is not None:
        lines.append(
            f"- CPU used by other processes on the machine during {scope}: "
            f"{cell(float(other), 0)}% of a core"
        )
    return "\n".join(lines)


def _tree(state: Any) -> str:
    if not isinstance(state, dict):
        return "?"
    changed = state.get("src_files_changed_since_commit") or []
    extra = f" plus uncommitted changes to {len(changed)} src files" if changed else ""
    return f"{state.get('commit') or '?'}{extra}"


# --- density --------------------------------------------------------------------------------


def _run(result: dict[str, Any], mode: str, n: int) -> dict[str, Any] | None:
    for r in result.get("runs", []):
        if r.get("mode") == mode and r.get("n") == n:
            return dict(r)
    return None


def _measured(r: dict[str, Any] | None) -> bool:
    return r is not None and r.get("status") in ("held", "over") and r.get("pss_mb") is not None


def density_verdicts(result: dict[str, Any], eot: dict[str, Any] | None = None) -> list[Verdict]:
    """`eot`: bench/eot_cost.py's result, to say what the end-of-turn model alone costs."""
    out = []
    co, pr = _run(result, "coroutine", 25), _run(result, "process", 25)
    target = f"coroutine at N=25 uses at least {PSS_RATIO_TARGET:g}x less PSS than process"
    if _measured(co) and _measured(pr):
        assert co is not None and pr is not None
        ratio = pr["pss_mb"] / co["pss_mb"]
        per = None
        if co.get("pss_per_call_mb") and pr.get("pss_per_call_mb"):
            per = pr["pss_per_call_mb"] / co["pss_per_call_mb"]
        per_text = f"; per added call {per:.1f}x" if per is not None else ""
        detail = (
            f"Worker tree PSS {co['pss_mb']:.0f} MB (coroutine) vs {pr['pss_mb']:.0f} MB "
            f"(process): {ratio:.1f}x{per_text}."
        )
        if ratio < PSS_RATIO_TARGET:
            detail += (
                " Both include the idle worker with its models "
                f"({co.get('idle_pss_mb')} vs {pr.get('idle_pss_mb')} MB), which dilutes "
                "the ratio at this N."
            )
        out.append(Verdict(target, ratio >= PSS_RATIO_TARGET, detail))
    else:
        why = [f"{m}: {r['status']} ({r.get('reason')})" for m, r in (("coroutine", co),
               ("process", pr)) if r is not None and not _measured(r)]  # fmt: skip
        out.append(Verdict(target, None if not why else False, "; ".join(why) or "not run."))

    r50 = _run(result, "coroutine", 50)
    target = f"coroutine at N=50: loop lag p99 < {LAG_P99_TARGET_MS:g} ms and no VAD frame missed"
    if _measured(r50):
        assert r50 is not None
        lag, vad, mic = (
            r50.get("loop_lag_p99_ms"),
            r50.get("vad_missed_pct"),
            r50.get("mic_missed_pct"),
        )
        warnings = r50.get("vad_lag_warnings")
        ok_lag = lag is not None and lag < LAG_P99_TARGET_MS
        ok_vad = vad == 0 and mic == 0 and not warnings
        detail = (
            f"Loop lag p99 {_bound(lag)} ms; VAD frames late {cell(vad, 2)}% of "
            f"{r50.get('vad_frames_pushed')}"
            + ("" if warnings is None else f", VAD-lag warnings from the worker {warnings}")
            + f"; caller audio late or lost {cell(mic, 2)}%; "
            f"CPU {cell(r50.get('cpu_pct'), 0)}% of one core "
            f"({cell(r50.get('cpu_per_call_pct'), 1)}% per call) on "
            f"{result.get('machine', {}).get('cores', '?')} cores."
        )
        if not (ok_lag and ok_vad):
            detail += (
                " The calls need more CPU than one event loop on this machine has: the loop "
                "falls behind, and audio waits for it."
            )
        stock = _run(result, "coroutine-stock-vad", 50)
        if _measured(stock):
            assert stock is not None
            detail += (
                " This is with the shared batched VAD, the coroutine default; with livekit's "
                f"stock per-call Silero streams the same N gives loop lag p99 "
                f"{_bound(stock.get('loop_lag_p99_ms'))} ms and "
                f"{cell(stock.get('vad_missed_pct'), 2)}% of VAD frames late."
            )
        out.append(Verdict(target, ok_lag and ok_vad, detail))
    else:
        detail = "not run." if r50 is None else f"{r50['status']}: {r50.get('reason')}"
        out.append(Verdict(target, None if r50 is None else False, detail))
    return out + shared_vad_verdicts(result, eot)


def eot_share(result: dict[str, Any], eot: dict[str, Any] | None) -> str:
    """What the end-of-turn model alone costs per call at N=25: its runs in the window
    (the worker's own count) times its CPU per prediction (bench/eot_cost.py)."""
    r = _run(result, "coroutine", 25)
    runs = ((r or {}).get("turn_predictions") or {}).get("runs")
    cost = (((eot or {}).get("runs") or {}).get("default") or {}).get("1.2 s", {}).get("cpu_ms")
    if r is None or runs is None or not r.get("window_s") or cost is None:
        return ""
    pct = 100 * runs * cost / 1000 / r["window_s"] / r["n"]
    per_turn = r.get("predictions_per_turn")
    return (
        f" The end-of-turn model ran {runs} times in that window"
        + (f" ({per_turn:.2f} per turn answered)" if per_turn is not None else "")
        + f"; at {cost:g} ms of CPU a prediction (bench/eot_cost.py) that alone is "
        f"{pct:.2f}% of a core per call."
    )


def cpu_parts_share(result: dict[str, Any]) -> str:
    """Where a call's CPU goes at N=25, per call, from each thread's own CPU clock: the
    event loop, the shared VAD's model thread, the end-of-turn model (its thread, and the
    helper threads its native model starts and joins within each prediction: the
    short-lived ones), the rest."""
    r = _run(result, "coroutine", 25)
    parts = (r or {}).get("cpu_parts_pct")
    if r is None or not parts:
        return ""
    n = r["n"]

    def per_call(*keys: str) -> str:
        return f"{sum(parts.get(k, 0.0) for k in keys) / n:.2f}%"

    return (
        " By thread, per call: event loop "
        + per_call("loop")
        + ", VAD model thread "
        + per_call("vad")
        + ", end-of-turn model "
        + per_call("turn", "short_lived")
        + f" ({per_call('turn')} on its thread, {per_call('short_lived')} on the short-lived "
        "threads its native model starts for each prediction), the rest "
        + per_call("other", "outside")
        + "."
    )


def shared_vad_verdicts(result: dict[str, Any], eot: dict[str, Any] | None = None) -> list[Verdict]:
    """The CPU-per-call targets: coroutine with the shared VAD, against its stock-VAD twin."""
    kept = result.get("summary") or {}
    co, stock = kept.get("coroutine") or {}, kept.get("coroutine-stock-vad") or {}
    out = []
    target = (
        f"coroutine (shared VAD): CPU per live call at N=25 at most "
        f"{CPU_PER_CALL_TARGET_PCT:.2f}% of a core"
    )
    at25, stock25 = co.get("cpu_per_call_pct_at_25"), stock.get("cpu_per_call_pct_at_25")
    if at25 is None:
        out.append(Verdict(target, None, "not run."))
    else:
        detail = f"{at25:.2f}% per call"
        if stock25:
            detail += (
                f"; {stock25:.2f}% with the stock per-call Silero streams in the same run "
                f"({stock25 / at25:.1f}x less)"
            )
        detail += "." + eot_share(result, eot) + cpu_parts_share(result)
        out.append(Verdict(target, at25 <= CPU_PER_CALL_TARGET_PCT, detail))
    out.append(per_box_verdict(kept))
    target = f"coroutine (shared VAD): PSS per added call at most {PSS_PER_CALL_TARGET_MB:g} MB"
    held = sorted(
        (r["n"], r["pss_mb"])
        for r in result.get("runs", [])
        if r.get("mode") == "coroutine" and r.get("n", 0) >= 10 and r.get("pss_mb")
    )
    if len(held) < 2:
        out.append(Verdict(target, None, "not run."))
    else:
        (n0, pss0), (n1, pss1) = held[0], held[-1]
        slope = (pss1 - pss0) / (n1 - n0)
        detail = (
            f"{slope:.2f} MB per added call from N={n0} ({pss0:.0f} MB) to N={n1} "
            f"({pss1:.0f} MB), the worker tree's PSS"
        )
        out.append(Verdict(target, slope <= PSS_PER_CALL_TARGET_MB, f"{detail}."))
    return out


def best_per_box(kept: dict[str, Any]) -> tuple[str | None, int | None]:
    """The mode that kept up the most calls on the box, and how many (ties: the first
    listed, which is the simpler one: one process before several)."""
    best_mode, best_n = None, None
    for mode, k in kept.items():
        n = (k or {}).get("largest_n_kept_up")
        if n is not None and (best_n is None or n > best_n):
            best_mode, best_n = mode, n
    return best_mode, best_n


def per_box_verdict(kept: dict[str, Any]) -> Verdict:
    """At least 100 calls keep up on the box, in whichever mode does best (one process or
    several: the issue allows any number of loops per box); says which mode it was."""
    target = (
        f"at least {KEPT_UP_TARGET_N} concurrent calls per box keep up ({KEEP_UP}), in the "
        "best mode per box"
    )
    if not kept:
        return Verdict(target, None, "not run.")
    mode, n = best_per_box(kept)
    met = n is not None and n >= KEPT_UP_TARGET_N
    if mode is None:
        detail = "no mode kept up at any N; largest N kept up: none"
    else:
        k = kept[mode]
        detail = (
            f"{'met by' if met else 'best mode'} {mode}: largest N kept up: {n} of N = "
            f"{k.get('ns_measured')}"
        )
        if k.get("first_n_missed"):
            detail += f"; first N that missed: {k['first_n_missed']}"
        if not met:
            detail += f"; no mode kept up {KEPT_UP_TARGET_N} calls"
    others = [
        f"{m}: {o.get('largest_n_kept_up') or 'none'}"
        + (f" (first missed {o['first_n_missed']})" if o.get("first_n_missed") else "")
        for m, o in kept.items()
        if m != mode
    ]
    if others:
        detail += "; other modes, largest N kept up: " + ", ".join(others)
    if not any("processes" in m for m in kept):
        detail += "; no mode with several processes per box was run (`coroutine-processes-2`)"
    return Verdict(target, met, detail + ".")


def keep_up_section(result: dict[str, Any]) -> list[str]:
    kept = result.get("summary")
    if not kept:
        return []
    rows = [
        [
            mode,
            k.get("largest_n_kept_up") or "none",
            _num(k.get("cpu_per_call_pct_at_largest"), 2),
            _num(k.get("cpu_per_call_pct_at_25"), 2),
            k.get("first_n_missed") or "-",
            _num(k.get("lone_call_turn_latency_p95_ms"), 0),
        ]
        for mode, k in kept.items()
    ]
    headers = ["mode", "largest N kept up", "CPU/call % there", "CPU/call % at N=25",
               "first N missed", "lone call turn p95 ms"]  # fmt: skip
    return [
        "### Largest N that keeps up",
        "",
        f"A mode keeps up at N when: {KEEP_UP} (its histogram bucket ends below 50 ms). "
        "The lone call is the same mode's N=1 run. A mode is not run past the first N "
        "where it does not.",
        "",
        markdown_table(headers, rows),
        "",
    ]


def _bound(value: Any, last: float = LATENCY_LAST_EDGE_MS) -> str:
    """A histogram percentile (a bucket's upper bound); past `last`, the last edge."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return f"> {last:g}"
    return f"<= {value:g}"


def vad_impl(kinds: Any) -> str:
    """A short name for the VAD implementation(s) a run's calls used."""
    names = []
    for path in sorted(kinds or {}):
        module, _, cls = str(path).rpartition(".")
        if module.startswith("openrtc.vad"):
            names.append(f"openrtc batched ({cls})")
        elif "silero" in module:
            names.append("stock Silero")
        else:
            names.append(cls or str(path))
    return ", ".join(names) or "n/a"


def density_section(result: dict[str, Any]) -> str:
    headers = ["mode", "N", "status", "kept up", "turns", "turn p50 ms", "turn p95 ms",
               "turn p95 over a lone call ms", "failed calls", "VAD-lag warnings", "PSS MB",
               "PSS/call MB", "CPU % of a core", "CPU/call %", "other load % of a core",
               "loop lag p50 ms", "loop lag p99 ms", "VAD late %", "caller audio late %", "VAD",
               "note"]  # fmt: skip
    rows = []
    for r in _shown_runs(result.get("runs", [])):
        rows.append(
            [
                r.get("mode"),
                r.get("n"),
                r.get("status"),
                r.get("kept_up"),
                r.get("turns_measured"),
                _bound(r.get("turn_latency_p50_ms")),
                _bound(r.get("turn_latency_p95_ms")),
                _num(r.get("turn_latency_p95_over_lone_ms"), 0),
                r.get("calls_failed"),
                r.get("vad_lag_warnings"),
                _num(r.get("pss_mb"), 0),
                _num(r.get("pss_per_call_mb"), 1),
                _num(r.get("cpu_pct"), 0),
                _num(r.get("cpu_per_call_pct"), 1),
                _num(r.get("other_cpu_pct"), 0),
                _bound(r.get("loop_lag_p50_ms")),
                _bound(r.get("loop_lag_p99_ms")),
                _num(r.get("vad_missed_pct"), 3),
                _num(r.get("mic_missed_pct"), 2),
                vad_impl(r.get("vad_kinds")),
                r.get("reason") or "",
            ]
        )
    cfg = result.get("config", {})
    defs = result.get("definitions", {})
    parts = [
        "## Density: live calls per worker",
        "",
        header(result),
        "",
        f"N audio-mode simulated calls per worker (real Silero VAD on real-time 16 kHz speech, "
        f"real end-of-turn model, fake STT/LLM/TTS), all live at once; a "
        f"{cell(cfg.get('window_s'), 0)} s steady window after all N run"
        + (
            f" (the lone call's, N=1, lasts until {cfg['lone_turns']} turns were answered)"
            if cfg.get("lone_turns")
            else ""
        )
        + ". Modes: "
        f"{_modes(cfg)}; extra worker flags {cfg.get('worker_args') or 'none'}."
        + _workload(cfg.get("workload")),
        "",
        markdown_table(headers, rows),
        "",
        *[f"- `{k}`: {v}" for k, v in defs.items()],
        "- status `held`: all N calls were live through the window and no stop limit was "
        "passed (the other columns say how well they were served); `over`: all N calls "
        "were held but a limit was passed (see note); "
        "`failed`: the worker could not hold N calls; `skipped`: not run, see note (only "
        "the first skipped N of a mode is listed).",
        "- loop lag and turn latency values are upper bounds of histogram buckets.",
        "",
        *keep_up_section(result),
        "### Verdicts",
        "",
        *[v.line() for v in density_verdicts(result)],
    ]
    return "\n".join(parts)


def _workload(w: Any) -> str:
    """One sentence on the calls a run placed (results before the seeded workload: none)."""
    if not isinstance(w, dict):
        return ""
    turns: Any = w.get("turns_per_call")
    pause: Any = w.get("pause_s")
    hold: Any = w.get("hold_s")
    return (
        f" Calls from a seeded workload (seed {w.get('seed')}): agents "
        f"{', '.join(w.get('agents') or [])} drawn per call, {turns[0]}-{turns[1]} turns, "
        f"{pause[0]}-{pause[1]} s think time, {hold[0]}-{hold[1]} s hold, dispatched with "
        f"exponential gaps around {w.get('mean_dispatch_gap_s')} s; a call that ends is "
        "replaced at once, so N stay live."
    )


def _shown_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every run, but only the first skipped N of a mode (the rest repeat its reason)."""
    shown, skipped = [], set()
    for r in runs:
        if r.get("status") == "skipped":
            if r.get("mode") in skipped:
                continue
            skipped.add(r.get("mode"))
        shown.append(r)
    return shown


def _modes(cfg: dict[str, Any]) -> str:
    """Each mode with the worker flags it ran with (when the result records them)."""
    args = cfg.get("mode_args") or {}
    return ", ".join(
        f"{m} (`{' '.join(args[m])}`)" if m in args else str(m) for m in cfg.get("modes", [])
    )


def _num(value: Any, digits: int) -> Any:
    """A number shown with exactly `digits` decimals (other values go to `cell` as they are)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return value


# --- admission ------------------------------------------------------------------------------


def admission_verdicts(result: dict[str, Any]) -> list[Verdict]:
    rows = result.get("rows", [])
    s = result.get("summary", {})
    if not rows:
        return [Verdict("admission exact in every burst", None, "not run.")]
    bad = [r for r in rows if not r.get("exact_every_time")]
    exact = Verdict(
        "admission exact in every burst",
        not bad,
        f"{s.get('bursts_exact')} of {s.get('bursts_run')} bursts admitted exactly "
        "min(burst, cap)"
        + (
            "; not exact: "
            + "; ".join(f"cap {r['cap']} burst {r['burst']}: {r['admitted']}" for r in bad)
            if bad
            else ""
        )
        + ".",
    )
    own = s.get("worker_answer_p99_ms")
    p99 = s.get("answer_p99_ms")
    worst = max(rows, key=lambda r: r.get("answer_p99_ms") or 0)
    offers = sum(r["offers"] for r in rows)
    round_trip = (
        f"As the loopback server read them back (its frame written -> the answer decoded, "
        f"which also holds the server's own loop: it shares the two cores and reads answers "
        f"only between writing a burst's offers and its other dispatch work): p99 over all "
        f"{offers} offers {cell(p99, 2)} ms (p50 {cell(s.get('answer_p50_ms'), 2)} ms); worst "
        f"group cap {worst['cap']} burst {worst['burst']}: p99 "
        f"{cell(worst.get('answer_p99_ms'), 2)} ms."
    )
    lone = result.get("lone_offers") or {}
    if lone.get("count"):
        round_trip += (
            f" A lone offer to an idle worker: p50 {cell(lone.get('answer_p50_ms'), 2)} ms, "
            f"p99 {cell(lone.get('answer_p99_ms'), 2)} ms."
        )
    if own is None:
        # results from before the worker timed its own answers: the round trip is all
        latency = Verdict(
            f"p99 availability answer < {ANSWER_P99_TARGET_MS:g} ms",
            None if p99 is None else p99 < ANSWER_P99_TARGET_MS,
            round_trip,
        )
        return [exact, latency]
    target = next((r for r in rows if (r["cap"], r["burst"]) == (25, 50)), None)
    detail = (
        f"The worker's own answer time (the socket data holding an offer reaching its read "
        f"loop -> the answer written; an offer read behind others of its burst counts the "
        f"wait, time the data waited in the kernel while the loop was busy elsewhere does "
        f"not), a histogram bucket bound: p99 <= {cell(own, 2)} ms over all "
        f"{s.get('worker_answers')} answers (p50 <= {cell(s.get('worker_answer_p50_ms'), 2)} ms)"
        + (
            f"; cap 25 burst 50: p99 <= {cell(target.get('worker_answer_p99_ms'), 2)} ms"
            if target
            else ""
        )
        + ". "
        + round_trip
    )
    latency = Verdict(
        f"p99 availability answer < {ANSWER_P99_TARGET_MS:g} ms (the worker's own answer time)",
        own < ANSWER_P99_TARGET_MS,
        detail,
    )
    return [exact, latency]


def admission_method(result: dict[str, Any]) -> str:
    """How the answer latency was measured, as the result records it (older results
    timed from the dispatch task's turn to send until it next ran)."""
    config = result.get("config") or {}
    measured = config.get("answer_latency")
    if measured is None:
        return "Answer latency: server sends the AvailabilityRequest -> receives the answer."
    audit = config.get("audit_file")
    own = config.get("worker_answer")
    return (
        f"Answer latency: {measured}"
        + (f"; audit file {audit}." if audit else ".")
        + (f" The worker's own answer time: {own}." if own else "")
    )


def admission_section(result: dict[str, Any]) -> str:
    headers = ["cap", "burst", "repetitions", "admitted each time", "exact", "offers",
               "answer p50 ms", "answer p99 ms", "answer max ms", "worker's own answer p50 ms",
               "worker's own answer p99 ms"]  # fmt: skip
    rows = [
        [
            r["cap"],
            r["burst"],
            r["repetitions"],
            ", ".join(str(a) for a in r["admitted"]) + f" (want {r['expected']})",
            r["exact_every_time"],
            r["offers"],
            r.get("answer_p50_ms"),
            r.get("answer_p99_ms"),
            r.get("answer_max_ms"),
            _bound(r.get("worker_answer_p50_ms"), ANSWER_BUCKETS_MS[-1]),
            _bound(r.get("worker_answer_p99_ms"), ANSWER_BUCKETS_MS[-1]),
        ]
        for r in result.get("rows", [])
    ]
    return "\n".join(
        [
            "## Admission: exact caps under bursts of offers",
            "",
            header(result),
            "",
            "Each burst dispatches all its jobs at once to one worker with "
            "`--max-concurrent-sessions CAP`; admitted calls hold the line through the burst. "
            + admission_method(result),
            "",
            markdown_table(headers, rows),
            "",
            "### Verdicts",
            "",
            *[v.line() for v in admission_verdicts(result)],
        ]
    )


# --- deploy ---------------------------------------------------------------------------------


def deploy_verdicts(result: dict[str, Any]) -> list[Verdict]:
    s = result.get("summary", {})
    if not s:
        return [Verdict("0 dropped in 10 rolling deploys", None, "not run.")]
    full = s.get("sigterm_to_full_p99_ms")
    tail = s.get("last_call_end_to_exit_p99_ms")
    deploys = s.get("deploys", 0)
    dropped = s.get("calls_dropped")
    missing = s.get("sigterm_to_full_not_measured", 0)
    accounted = s.get("calls_accounted")
    accounting = {True: "; every call accounted for", False: "; NOT every call accounted for"}
    return [
        Verdict(
            f"SIGTERM -> full < {FULL_P99_TARGET_MS:g} ms p99",
            None if full is None else full < FULL_P99_TARGET_MS,
            f"p99 {cell(full)} ms, p50 {cell(s.get('sigterm_to_full_p50_ms'))} ms, max "
            f"{cell(s.get('sigterm_to_full_max_ms'))} ms over {s.get('old_workers')} old workers"
            + (f" ({missing} not measured)" if missing else "")
            + ".",
        ),
        Verdict(
            f"last call end -> exit < {EXIT_P99_TARGET_MS:g} ms",
            None if tail is None else tail < EXIT_P99_TARGET_MS,
            f"p99 {cell(tail)} ms, p50 {cell(s.get('last_call_end_to_exit_p50_ms'))} ms, max "
            f"{cell(s.get('last_call_end_to_exit_max_ms'))} ms.",
        ),
        Verdict(
            f"0 dropped in {DEPLOYS_TARGET} rolling deploys",
            deploys >= DEPLOYS_TARGET and dropped == 0 and accounted is not False,
            f"{deploys} deploys, {s.get('calls_placed')} calls: dropped {dropped}, unserved "
            f"{s.get('calls_unserved')}, failed {s.get('calls_failed')}, completed "
            f"{s.get('calls_completed')}; {s.get('nonzero_exits')} old workers exited non-zero"
            + (f" (only {deploys} of {DEPLOYS_TARGET} deploys run)" if deploys < 10 else "")
            + accounting.get(accounted, "")
            + ".",
        ),
    ]


def deploy_section(result: dict[str, Any]) -> str:
    headers = ["deploy", "versions", "ok", "placed", "completed", "failed", "dropped",
               "unserved", "live at SIGTERM", "offers after SIGTERM (taken)",
               "SIGTERM -> full ms", "last call end -> exit ms", "exit codes"]  # fmt: skip

    def join(values: dict[str, Any] | None) -> str:
        if values is None:
            return "n/a"
        return ", ".join("n/a" if v is None else f"{v:.0f}" for v in values.values())

    def offers(r: dict[str, Any]) -> str:
        sent, taken = r.get("offers_after_sigterm"), r.get("calls_taken_after_sigterm")
        if sent is None or taken is None:
            return "n/a"
        return f"{sum(sent.values())} ({sum(taken.values())})"

    rows = [
        [
            r["deploy"],
            f"{r.get('from_version', '?')} -> {r.get('to_version', '?')}",
            r["ok"],
            r["calls_placed"],
            r["calls_completed"],
            r["calls_failed"],
            r["calls_dropped"],
            r["calls_unserved"],
            join(r.get("calls_live_at_sigterm")),
            offers(r),
            join(r["sigterm_to_full_ms"]),
            join(r["last_call_end_to_exit_ms"]),
            ", ".join(str(c) for c in r["exit_codes"].values()),
        ]
        for r in result.get("deploys", [])
    ]
    cfg = result.get("config", {})
    s = result.get("summary", {})
    hold = cfg.get("call_hold_s") or ["?", "?"]
    return "\n".join(
        [
            "## Deploy: rolling deploys under steady traffic",
            "",
            header(result),
            "",
            f"{cfg.get('deploys')} consecutive rolling deploys of one fleet of "
            f"{cfg.get('workers_per_version')} workers (real processes) on one dispatch server, "
            f"under one stream of {cfg.get('call_mode', '?')}-mode simulated calls of "
            f"{hold[0]}-{hold[1]} s at {cfg.get('call_rate_per_s')}/s that runs unbroken through "
            "every deploy. Each deploy replaces the workers one at a time: a new-version worker "
            "starts, and once the server has it accepting, one old worker gets SIGTERM (no "
            "manifest: SIGTERM alone does the cutover). A deploy's calls are those placed from "
            "its start to the next deploy's start; 'live at SIGTERM' is per old worker.",
            "",
            markdown_table(headers, rows),
            "",
            f"Every call of the run ({cell(s.get('calls_before_first_deploy'))} of them placed "
            f"before the first deploy): placed {s.get('calls_placed')}, completed "
            f"{s.get('calls_completed')}, failed {s.get('calls_failed')}, cancelled "
            f"{s.get('calls_cancelled')}, dropped {s.get('calls_dropped')}, unserved "
            f"{s.get('calls_unserved')}, still open at the end "
            f"{cell(s.get('calls_unfinished'))}; accounted for: "
            f"{cell(s.get('calls_accounted'))}. Calls an old worker took after its SIGTERM: "
            f"{cell(s.get('calls_taken_by_old_after_sigterm'))}; the last fleet "
            f"drained with {cell(s.get('final_fleet_nonzero_exits'))} non-zero exits.",
            "",
            "### Verdicts",
            "",
            *[v.line() for v in deploy_verdicts(result)],
        ]
    )


# --- overload -------------------------------------------------------------------------------


def _processes(run: dict[str, Any]) -> str:
    k = run.get("processes", 1)
    return "one process" if k == 1 else f"--processes {k}"


def _keep_up_misses(k: dict[str, Any], lone: dict[str, Any] | None) -> list[str]:
    """Which part of keeping up the admitted calls missed (density's definition)."""
    out = []
    if k.get("status") != "held":
        out.append(f"not held: {k.get('reason') or k.get('status')}")
    over = k.get("turn_latency_p95_over_lone_ms")
    if k.get("turn_latency_p95_ms") is None or (lone or {}).get("turn_latency_p95_ms") is None:
        out.append("no turn latency to judge (none measured, or no lone call)")
    elif over is not None and over > 50:
        out.append(f"turn p95 {over:g} ms above a lone call's")
    if k.get("vad_lag_warnings"):
        out.append(f"the worker warned {k['vad_lag_warnings']}x that its VAD is behind")
    lag = k.get("loop_lag_p99_ms")
    if lag is None or lag >= LAG_P99_TARGET_MS:
        out.append(f"loop lag p99 {_bound(lag)} ms")
    return out


def overload_misses(run: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """What keeps one burst from meeting the overload target, in plain words; [] if met."""
    misses = []
    offered, within = run.get("offered", 0), config.get("within_s")
    if offered < OVERLOAD_OFFERED or within is None or within > OVERLOAD_WITHIN_S:
        misses.append(f"the burst was {offered} calls in {cell(within, 1)} s, not the target's")
    if run.get("status") != "run":
        misses.append(f"the run failed: {run.get('reason')}")
    if run.get("calls_failed"):
        misses.append(f"{run['calls_failed']} admitted calls failed {run.get('failed_jobs')}")
    if run.get("admitted", 0) < OVERLOAD_ADMITTED:
        misses.append(f"only {run.get('admitted', 0)} admitted")
    stray = (run.get("offer_unanswered") or 0) + (run.get("not_admitted_other") or 0)
    if stray:
        misses.append(f"{stray} calls were neither admitted nor refused (offers unanswered)")
    if not run.get("kept_up"):
        why = _keep_up_misses(run.get("keep_up") or {}, run.get("lone"))
        because = f" ({'; '.join(why)})" if why else ""
        misses.append(f"the admitted calls did not keep up{because}")
    return misses


def _burst_text(run: dict[str, Any]) -> str:
    k = run.get("keep_up") or {}
    reasons = ", ".join(f"{r} {c}" for r, c in (run.get("refusal_reasons") or {}).items())
    return (
        f"{_processes(run)}: {run.get('offered')} offered in {cell(run.get('dispatch_span_s'), 1)}"
        f" s, {run.get('admitted')} admitted, {run.get('not_admitted')} not "
        f"({run.get('refused_by_answer')} refused in an answer, {run.get('never_offered_full')} "
        f"never offered as the worker reported itself full; reasons: {reasons or 'none'}), "
        f"{run.get('calls_failed')} failed; turn p95 "
        f"{cell(k.get('turn_latency_p95_over_lone_ms'), 0)} ms over a lone call, "
        f"{k.get('vad_lag_warnings')} VAD-lag warnings, loop lag p99 "
        f"{_bound(k.get('loop_lag_p99_ms'))} ms"
    )


def overload_verdicts(result: dict[str, Any] | None) -> list[Verdict]:
    """Met when some worker shape (one process or several per box) meets every part."""
    runs = (result or {}).get("runs") or []
    if not runs:
        return [Verdict(OVERLOAD_TARGET, None, "not run: `bench/overload.py` offers this burst.")]
    config = (result or {}).get("config") or {}
    judged = [(r, overload_misses(r, config)) for r in runs]
    met = [r for r, misses in judged if not misses]
    parts = []
    for r, misses in judged:
        verdict = "met" if not misses else "missed: " + "; ".join(misses)
        parts.append(f"{_burst_text(r)}: {verdict}")
    lead = (
        f"Met with {', '.join(_processes(r) for r in met)}. " if met else "No worker shape met it. "
    )
    return [Verdict(OVERLOAD_TARGET, bool(met), lead + " | ".join(parts) + ".")]


def overload_section(result: dict[str, Any]) -> str:
    headers = ["processes", "offered", "within s", "admitted", "refused in an answer",
               "never offered (worker full)", "unanswered", "refusal reasons",
               "worker full after s", "admitted before full", "failed", "live at end",
               "kept up", "turns", "turn p50 ms", "turn p95 ms", "lone call turn p95 ms",
               "turn p95 over a lone call ms", "VAD-lag warnings", "loop lag p99 ms",
               "VAD late %", "CPU % of a core", "CPU/call %", "PSS MB",
               "other load % of a core", "note"]  # fmt: skip
    rows = []
    for r in result.get("runs", []):
        k = r.get("keep_up") or {}
        rows.append(
            [
                r.get("processes"),
                r.get("offered"),
                _num(r.get("dispatch_span_s"), 2),
                r.get("admitted"),
                r.get("refused_by_answer"),
                r.get("never_offered_full"),
                r.get("offer_unanswered"),
                ", ".join(f"{a} {b}" for a, b in (r.get("refusal_reasons") or {}).items()),
                _num(r.get("worker_full_after_s"), 2),
                r.get("admitted_before_full"),
                r.get("calls_failed"),
                r.get("calls_live_at_end"),
                r.get("kept_up"),
                k.get("turns_measured"),
                _bound(k.get("turn_latency_p50_ms")),
                _bound(k.get("turn_latency_p95_ms")),
                _bound((r.get("lone") or {}).get("turn_latency_p95_ms")),
                _num(k.get("turn_latency_p95_over_lone_ms"), 0),
                k.get("vad_lag_warnings"),
                _bound(k.get("loop_lag_p99_ms")),
                _num(k.get("vad_missed_pct"), 3),
                _num(k.get("cpu_pct"), 0),
                _num(k.get("cpu_per_call_pct"), 2),
                _num(k.get("pss_mb"), 0),
                _num(k.get("other_cpu_pct"), 0),
                "; ".join(x for x in (r.get("reason"), k.get("reason")) if x),
            ]
        )
    cfg = result.get("config", {})
    defs = result.get("definitions", {})
    return "\n".join(
        [
            "## Overload: a burst past what the box holds, no cap",
            "",
            header(result),
            "",
            f"{cfg.get('offered')} audio-mode simulated calls from density's seeded workload "
            f"offered within {cfg.get('within_s')} s to one worker with default settings (no "
            f"cap, default --load-threshold; extra flags {cfg.get('worker_args') or 'none'}), "
            "once per worker shape (`--processes K`: K children registering as K workers). "
            f"Each dispatch has a {cfg.get('offer_deadline_s')} s deadline: a call not taken "
            "by then ends unserved at the server (a real server would offer it to another "
            "worker), so a refused call is never admitted later. Admitted calls hold the line "
            f"through a {cfg.get('window_s')} s steady window, measured as density measures N "
            "calls; their turn latency is compared with a lone call on the same worker shape.",
            "",
            markdown_table(headers, rows),
            "",
            *[f"- `{k}`: {v}" for k, v in defs.items()],
            "",
            "### Verdicts",
            "",
            *[v.line() for v in overload_verdicts(result)],
        ]
    )


# --- event loop: uvloop against asyncio ---------------------------------------------------

UVLOOP_GAIN_PCT = 0.1
"""CPU per call (points of a core) uvloop must save at N=25 to count as a gain: about the
run-to-run spread of that number on an idle box."""


HARNESS_KEYS = ("window_s", "settle_s", "pace_s", "lone_turns", "workload")
"""Density settings that must match for two runs' verdicts to be compared."""


def harness_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What two density runs differ in besides the loop ("key: a vs b"), if anything: their
    measurement settings, or the code they ran (its commit and the files changed since)."""
    ca, cb = a.get("config") or {}, b.get("config") or {}
    out = [f"{k}: {ca.get(k)} vs {cb.get(k)}" for k in HARNESS_KEYS if ca.get(k) != cb.get(k)]
    code_a = ((a.get("machine") or {}).get("openrtc")) or {}
    code_b = ((b.get("machine") or {}).get("openrtc")) or {}
    if code_a != code_b:
        out.append(f"openrtc: {code_a.get('commit')} vs {code_b.get('commit')}")
    return out


def uvloop_verdict(asyncio_run: dict[str, Any], uvloop_run: dict[str, Any]) -> Verdict:
    """uvloop counts as a gain when, for some mode both runs measured, it keeps up with
    more calls at no more CPU per call at N=25, or with as many at least `UVLOOP_GAIN_PCT`
    less (both rounded to the 0.01 the results hold), and no mode keeps up with fewer.

    More calls kept up at a higher CPU per call is not a faster loop: the largest N that
    keeps up moves by one step of the grid between two runs of the same code (a single
    VAD-lag warning at the edge), so it counts only with the CPU saying the same. Two grids
    measured differently (`HARNESS_KEYS`) are not compared at all."""
    differs = harness_differences(asyncio_run, uvloop_run)
    if differs:
        return Verdict(
            "uvloop gains over asyncio",
            None,
            "the two runs were measured differently (" + "; ".join(differs) + "): rerun the "
            "uvloop grid (bench/README.md) to compare them",
        )
    gains, losses, fewer = [], [], []
    ours = uvloop_run.get("summary") or {}
    theirs = asyncio_run.get("summary") or {}
    for mode in sorted(set(ours) & set(theirs)):
        u, a = ours[mode], theirs[mode]
        un, an = u.get("largest_n_kept_up") or 0, a.get("largest_n_kept_up") or 0
        ucpu, acpu = u.get("cpu_per_call_pct_at_25"), a.get("cpu_per_call_pct_at_25")
        saved = round(acpu - ucpu, 2) if ucpu is not None and acpu is not None else None
        text = f"{mode}: kept up {an} -> {un}"
        if saved is not None:
            text += f", CPU/call at N=25 {acpu:.2f}% -> {ucpu:.2f}%"
        if un < an:
            fewer.append(mode)
        cheaper = saved is None or saved >= 0
        if (un > an and cheaper) or (un == an and saved is not None and saved >= UVLOOP_GAIN_PCT):
            gains.append(text)
        elif un > an:
            losses.append(
                text + " (more calls kept up, but at more CPU per call: the edge moving "
                "between runs, not a faster loop)"
            )
        else:
            losses.append(text)
    if not gains and not losses:
        return Verdict("uvloop gains over asyncio", None, "no mode was measured on both loops")
    detail = "; ".join(gains + losses)
    met = bool(gains) and not fewer
    if gains and fewer:
        detail += f". It keeps up with fewer calls in {', '.join(fewer)}, so that is no gain"
    return Verdict(
        "uvloop gains over asyncio (more calls kept up at no more CPU per call, or "
        f"{UVLOOP_GAIN_PCT:g} point less CPU per call at N=25, and fewer in no mode)",
        met,
        detail + (". The default stays asyncio." if not met else "."),
    )


LOOP_PAIRS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("density",), "density-uvloop"),
    (("ab-loop-asyncio", "ab-loop-asyncio-repeat"), "ab-loop-uvloop"),
)
"""Results that compare the two loops, best first: the full grids, then the short runs
made back to back (bench/README.md); each names its asyncio runs (the first, then repeats)
and its uvloop run."""


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One asyncio result from repeats of the same run: per mode, the most calls any repeat
    kept up and the least CPU per call at N=25. uvloop must beat that to count as a gain,
    so a single unlucky asyncio run at the edge does not make it one."""
    if len(runs) == 1:
        return runs[0]
    summary: dict[str, dict[str, Any]] = {}
    for run in runs:
        for mode, s in (run.get("summary") or {}).items():
            best = summary.setdefault(mode, dict(s))
            best["largest_n_kept_up"] = max(
                best.get("largest_n_kept_up") or 0, s.get("largest_n_kept_up") or 0
            )
            pair = (best.get("cpu_per_call_pct_at_25"), s.get("cpu_per_call_pct_at_25"))
            known = [c for c in pair if c is not None]
            best["cpu_per_call_pct_at_25"] = min(known) if known else None
    return {**runs[0], "summary": summary}


def loop_pair(
    results: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """The asyncio result (the best of its repeats) and the uvloop run to compare, and what
    they are: the first entry of `LOOP_PAIRS` whose runs were all measured the same way on
    the same code, else the first present (whose verdict then says why it does not
    compare)."""
    present = []
    for asyncio_names, uvloop_name in LOOP_PAIRS:
        names = [n for n in asyncio_names if n in results]
        if names and names[0] == asyncio_names[0] and uvloop_name in results:
            present.append((names, uvloop_name))
    for names, u in present:
        runs = [results[n] for n in names]
        if not any(harness_differences(r, results[u]) for r in runs):
            return best_of(runs), results[u], _pair_names(names, u)
    if not present:
        return None
    names, u = present[0]
    differing = next(results[n] for n in names if harness_differences(results[n], results[u]))
    return differing, results[u], _pair_names(names, u)


def _pair_names(asyncio_names: list[str], uvloop_name: str) -> str:
    runs = " and ".join(f"{n}.json" for n in asyncio_names)
    best = (
        " (the table shows the first asyncio run; the verdict takes the best of them)"
        if len(asyncio_names) > 1
        else ""
    )
    return f"{uvloop_name}.json against {runs}{best}"


def uvloop_section(asyncio_run: dict[str, Any], uvloop_run: dict[str, Any], names: str) -> str:
    """The same density runs on both loops, mode by mode and N by N."""
    rows = []
    for r in _shown_runs(uvloop_run.get("runs", [])):
        other = _run(asyncio_run, r.get("mode", ""), r.get("n", -1))
        if other is None or not _measured(r) or not _measured(other):
            continue
        rows.append(
            [
                r["mode"],
                r["n"],
                _num(other.get("cpu_per_call_pct"), 2),
                _num(r.get("cpu_per_call_pct"), 2),
                _bound(other.get("loop_lag_p99_ms")),
                _bound(r.get("loop_lag_p99_ms")),
                _bound(other.get("turn_latency_p95_ms")),
                _bound(r.get("turn_latency_p95_ms")),
                "yes" if other.get("kept_up") else "no",
                "yes" if r.get("kept_up") else "no",
            ]
        )
    headers = ["mode", "N", "CPU/call % asyncio", "CPU/call % uvloop",
               "loop lag p99 ms asyncio", "uvloop", "turn p95 ms asyncio", "uvloop",
               "kept up asyncio", "uvloop"]  # fmt: skip
    return "\n".join(
        [
            "## Event loop: uvloop against asyncio",
            "",
            header(uvloop_run),
            "",
            f"The density benchmark with `--event-loop uvloop` for the worker against the same "
            f"run on asyncio (same workload, same seed): {names}.",
            "",
            markdown_table(headers, rows),
            "",
            "### Verdicts",
            "",
            uvloop_verdict(asyncio_run, uvloop_run).line(),
        ]
    )


# --- the page -------------------------------------------------------------------------------

SECTIONS = (
    ("density", density_section, "bench/density.py"),
    ("admission", admission_section, "bench/admission.py"),
    ("deploy", deploy_section, "bench/deploy.py"),
    ("overload", overload_section, "bench/overload.py"),
)


def render(results: dict[str, dict[str, Any]]) -> str:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from `bench/results/*.json`; do not edit by hand. "
        "How to rerun: `bench/README.md`.",
        "",
        "## Verdicts at a glance",
        "",
    ]
    verdicts: list[Verdict] = []
    if "density" in results:
        verdicts += density_verdicts(results["density"], results.get("eot"))
    verdicts += overload_verdicts(results.get("overload"))
    for name, fn in (("admission", admission_verdicts), ("deploy", deploy_verdicts)):
        if name in results:
            verdicts += fn(results[name])
    loops = loop_pair(results)
    if loops is not None:
        verdicts.append(uvloop_verdict(loops[0], loops[1]))
    parts += [v.line() for v in verdicts] or ["- no results yet"]
    for name, section, script in SECTIONS:
        parts.append("")
        if name in results:
            parts.append(section(results[name]))
        else:
            parts.append(f"## {name}\n\nNo results: run `{script}`.")
    if loops is not None:
        parts += ["", uvloop_section(*loops)]
    return "\n".join(parts) + "\n"


def load(results_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    loops = [n for asyncio_names, u in LOOP_PAIRS for n in (*asyncio_names, u)]
    names = [n for n, _, _ in SECTIONS] + loops + ["eot"]
    for name in dict.fromkeys(names):
        path = results_dir / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=DOC)
    a = ap.parse_args(argv)
    text = render(load(a.results))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
