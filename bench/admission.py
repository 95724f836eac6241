"""Admission: bursts of simultaneous offers against exact caps.

For each cap a fresh `openrtc start examples/agents --max-concurrent-sessions CAP` worker
runs as a subprocess against the loopback dispatch server in this process, with its
audit file on (`--audit-path` in the work directory, batched fsync; `--no-audit-file`
turns it off). Each burst dispatches B jobs at once (text-mode simulated calls that hold
the line, so every admitted call stays live through the burst); the dispatch deadline
is short, so a job the worker refuses is not taken later. Per burst:

- admitted: jobs assigned to the worker; it must equal min(B, CAP), exactly, every time
  (and the worker's own snapshot must agree);
- answer latency: for every offer of the burst, the worker's answer time
  (`JobRecord.offers[i].answered_in_ms`): from the AvailabilityRequest's frame written
  to the socket to the answer decoded by the server's read loop. The server's own
  queueing is not in it: the clock starts after the send (not when the dispatch task
  asked to send) and stops when the answer is read (not when the waiting task next
  runs). What remains of the server is the time its loop takes to read the socket.
- the worker's answer time (its `/snapshot` `offer_answers`, the histogram behind
  `openrtc_offer_answer_seconds`): from the socket data holding the offer reaching the
  worker's read loop to the answer written back, an offer read behind others of the
  burst counting its wait for them (time the data waited in the kernel while the loop
  was busy elsewhere is not in it; the round trip has it). The round trip
  above also holds the loopback server's own loop, which shares the box's two cores and
  reads answers only between writing the burst's offers and its other dispatch work.
  Percentiles are histogram bucket bounds ("<= 2 ms").

Then the admitted calls are hung up and the worker is back to idle before the next burst.

    PYTHONPATH=src .venv/bin/python bench/admission.py            # ~3.5 min
    PYTHONPATH=src .venv/bin/python bench/admission.py --quick    # cap 25, one burst of 50
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchkit import (
    OtherLoad,
    Worker,
    command_line,
    hist_diff,
    hist_percentile,
    machine_info,
    now_iso,
    own_cpu_seconds,
    percentile,
    pin_source,
    server_env,
    system_busy_seconds,
    write_result,
)
from rich.console import Console
from rich.table import Table

from openrtc.admission import ANSWER_BUCKETS_MS
from openrtc.devserver import DispatchServer

AGENTS = ("sales", "support", "booking")
DEADLINE_S = 3.0
HOLD_S = 30.0
LONE_OFFERS = 10
OTHER_LOAD_LIMIT = 25.0
"""% of a core used by other processes during a burst past which it is taken again."""
MAX_TRIES = 3
console = Console()


@dataclass
class Burst:
    cap: int
    burst: int
    rep: int
    expected: int
    admitted: int
    worker_active: int | None
    exact: bool
    offers: int
    answered_ms: list[float] = field(default_factory=list)
    unanswered: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    other_cpu_pct: float | None = None
    """CPU other processes used during the burst (measured from the dispatch to the end)."""
    tries: int = 1
    worker_counts: list[int] = field(default_factory=list)
    """The worker's own answer times for this burst, per bucket of `ANSWER_BUCKETS_MS`."""
    worker_p50_ms: float | None = None
    worker_p99_ms: float | None = None


def answer_counts(snap: dict[str, Any] | None) -> list[int]:
    """The worker's answers per bucket of `ANSWER_BUCKETS_MS` (the last: over them all),
    from the cumulative histogram in its /snapshot; zeros before any answer."""
    le_ms = ((snap or {}).get("offer_answers") or {}).get("le_ms") or {}
    cumulative = [int(le_ms.get(str(b), 0)) for b in ANSWER_BUCKETS_MS]
    cumulative.append(int(le_ms.get("+Inf", cumulative[-1])))
    return [n - prev for n, prev in zip(cumulative, [0, *cumulative[:-1]], strict=True)]


def answer_percentile(counts: list[int], q: float) -> float | None:
    return hist_percentile(ANSWER_BUCKETS_MS, counts, q)


def summed(parts: list[list[int]]) -> list[int]:
    return [sum(column) for column in zip(*parts, strict=True)] if parts else []


async def _until_idle(srv: DispatchServer, worker: Worker, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = await worker.snapshot()
        record = srv.worker(worker.worker_id) if worker.worker_id else None
        if (
            snap is not None
            and snap.get("active_sessions") == 0
            and record is not None
            and record.status == "WS_AVAILABLE"
        ):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the worker did not return to idle in {timeout:.0f}s")


async def quiet_burst(srv: DispatchServer, worker: Worker, cap: int, size: int, rep: int) -> Burst:
    """A burst; taken again (at most MAX_TRIES) when other processes disturbed it."""
    best: Burst | None = None
    for attempt in range(1, MAX_TRIES + 1):
        await _until_idle(srv, worker)
        busy0, own0, w0 = system_busy_seconds(), own_cpu_seconds(), worker.cpu_seconds()
        t0 = time.monotonic()
        b = await burst(srv, worker, cap, size, rep)
        seconds = time.monotonic() - t0
        other = (system_busy_seconds() - busy0) - (own_cpu_seconds() - own0)
        other -= worker.cpu_seconds() - w0
        b.other_cpu_pct = round(max(0.0, 100 * other / seconds), 1)
        b.tries = attempt
        if best is None or b.other_cpu_pct < (best.other_cpu_pct or 0):
            best = b
        if b.other_cpu_pct <= OTHER_LOAD_LIMIT or not b.exact:
            return b if not b.exact else best
    assert best is not None
    return best


async def burst(srv: DispatchServer, worker: Worker, cap: int, size: int, rep: int) -> Burst:
    script = {"turns": ["hello"], "mode": "text", "pause_s": 0.0, "hold_s": HOLD_S}
    # the measuring server's own garbage collection (tens of ms over this process's heap)
    # stays out of the burst: collect now, none until every offer has its answer
    before = answer_counts(await worker.snapshot())
    gc.collect()
    gc.disable()
    try:
        jobs = await asyncio.gather(
            *(
                srv.dispatch(
                    metadata={"agent": AGENTS[i % len(AGENTS)]},
                    simulated_call=script,
                    deadline=DEADLINE_S,
                )
                for i in range(size)
            )
        )
        ids = [j.id for j in jobs]
        for job_id in ids:
            await srv.wait_job(
                job_id, {"running", "unserved", "failed", "success"}, DEADLINE_S + 10
            )
    finally:
        gc.enable()
    await asyncio.sleep(0.3)
    snap = await worker.snapshot()
    records = [srv.job(i) for i in ids]
    admitted = sum(1 for r in records if r.worker_id is not None)
    latencies = [
        o.answered_in_ms for r in records for o in r.offers if o.answered_in_ms is not None
    ]
    unanswered = sum(1 for r in records for o in r.offers if o.answered_in_ms is None)
    expected = min(size, cap)
    active = None if snap is None else int(snap.get("active_sessions", -1))
    own = hist_diff(answer_counts(snap), before)
    result = Burst(
        cap=cap,
        burst=size,
        rep=rep,
        expected=expected,
        admitted=admitted,
        worker_active=active,
        exact=admitted == expected and active == expected,
        offers=sum(len(r.offers) for r in records),
        answered_ms=latencies,
        unanswered=unanswered,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies) if latencies else None,
        worker_counts=own,
        worker_p50_ms=answer_percentile(own, 50),
        worker_p99_ms=answer_percentile(own, 99),
    )
    for r in records:
        if r.worker_id is not None and not r.state.final:
            await srv.end_call(r.id)
    for r in records:
        if r.worker_id is not None:
            await srv.wait_job(r.id, {"success", "failed", "cancelled", "dropped"}, 30.0)
    return result


async def lone_offers(srv: DispatchServer, worker: Worker, count: int) -> list[float]:
    """Answer latency of offers sent one at a time to an idle worker: no queue ahead."""
    script = {"turns": ["hello"], "mode": "text", "pause_s": 0.0, "hold_s": HOLD_S}
    out: list[float] = []
    for i in range(count):
        await _until_idle(srv, worker)
        job = await srv.dispatch(
            metadata={"agent": AGENTS[i % len(AGENTS)]}, simulated_call=script, deadline=DEADLINE_S
        )
        await srv.wait_job(job.id, {"running", "unserved", "failed"}, DEADLINE_S + 10)
        out += [o.answered_in_ms for o in job.offers if o.answered_in_ms is not None]
        if not job.state.final:
            await srv.end_call(job.id)
            await srv.wait_job(job.id, {"success", "failed", "cancelled", "dropped"}, 30.0)
    return out


async def run_cap(
    cap: int, bursts: list[int], reps: int, workdir: Path, lone: list[float], audit: bool
) -> list[Burst]:
    out: list[Burst] = []
    args = ["--max-concurrent-sessions", str(cap), "--deployment-version", "bench"]
    if audit:
        args += ["--audit-path", str(workdir / f"audit-cap{cap}.jsonl")]
    async with DispatchServer(dispatch_deadline=DEADLINE_S, offer_timeout=2.0) as srv:
        worker = Worker(
            args=args,
            env=server_env(srv),
            log_path=workdir / f"admission-cap{cap}.log",
            name=f"cap{cap}",
        )
        try:
            await worker.start()
            await worker.wait_accepting()
            lone += await lone_offers(srv, worker, LONE_OFFERS)
            for size in bursts:
                for rep in range(1, reps + 1):
                    b = await quiet_burst(srv, worker, cap, size, rep)
                    out.append(b)
                    mark = "[green]exact" if b.exact else "[red]NOT EXACT"
                    console.print(
                        f"  cap {cap} burst {size} #{rep}: admitted {b.admitted}/{b.expected} "
                        f"(worker says {b.worker_active}) {mark}[/], answer p50 "
                        f"{b.p50_ms} ms p99 {b.p99_ms} ms over {len(b.answered_ms)} offers; "
                        f"the worker's own: p50 <= {b.worker_p50_ms} ms p99 <= "
                        f"{b.worker_p99_ms} ms"
                    )
        finally:
            await worker.kill()
    return out


def summarize(bursts: list[Burst]) -> list[dict[str, Any]]:
    """One row per (cap, burst size): exactness over repetitions and pooled latencies."""
    rows: list[dict[str, Any]] = []
    keys = sorted({(b.cap, b.burst) for b in bursts})
    for cap, size in keys:
        group = [b for b in bursts if b.cap == cap and b.burst == size]
        lat = [ms for b in group for ms in b.answered_ms]
        own = summed([b.worker_counts for b in group])
        rows.append(
            {
                "cap": cap,
                "burst": size,
                "repetitions": len(group),
                "expected": group[0].expected,
                "admitted": [b.admitted for b in group],
                "exact_every_time": all(b.exact for b in group),
                "offers": sum(b.offers for b in group),
                "unanswered": sum(b.unanswered for b in group),
                "answer_p50_ms": percentile(lat, 50),
                "answer_p99_ms": percentile(lat, 99),
                "answer_max_ms": max(lat) if lat else None,
                "worker_answers": sum(own),
                "worker_answer_p50_ms": answer_percentile(own, 50),
                "worker_answer_p99_ms": answer_percentile(own, 99),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Admission: simultaneous offers against an exact cap")
    for col in ("cap", "burst", "reps", "admitted", "exact", "offers", "p50 ms", "p99 ms",
                "max ms", "worker p50 ms", "worker p99 ms"):  # fmt: skip
        t.add_column(col)
    for r in rows:
        t.add_row(
            str(r["cap"]),
            str(r["burst"]),
            str(r["repetitions"]),
            ",".join(str(a) for a in r["admitted"]) + f" (want {r['expected']})",
            "yes" if r["exact_every_time"] else "NO",
            str(r["offers"]),
            f"{r['answer_p50_ms']}",
            f"{r['answer_p99_ms']}",
            f"{r['answer_max_ms']}",
            f"<= {r['worker_answer_p50_ms']}",
            f"<= {r['worker_answer_p99_ms']}",
        )
    return t


async def main_async(
    caps: list[int], bursts: list[int], reps: int, workdir: Path, audit: bool = True
) -> dict[str, Any]:
    started = time.monotonic()
    machine = machine_info()
    load = OtherLoad()
    all_bursts: list[Burst] = []
    lone: list[float] = []
    for cap in caps:
        console.print(f"[bold]cap {cap}[/]")
        all_bursts.extend(await run_cap(cap, bursts, reps, workdir, lone, audit))
    console.print(
        f"lone offers: p50 {percentile(lone, 50)} ms, p99 {percentile(lone, 99)} ms "
        f"over {len(lone)}"
    )
    rows = summarize(all_bursts)
    duration = round(time.monotonic() - started, 1)
    console.print(table(rows))
    console.print(f"took {duration:.0f}s")
    lat = [ms for b in all_bursts for ms in b.answered_ms]
    own = summed([b.worker_counts for b in all_bursts])
    return {
        "benchmark": "admission",
        "date": now_iso(),
        "machine": machine,
        "command": command_line(),
        "duration_s": duration,
        "other_cpu_pct": load.pct_of_a_core(),
        "config": {
            "caps": caps,
            "bursts": bursts,
            "repetitions": reps,
            "dispatch_deadline_s": DEADLINE_S,
            "call": "text-mode simulated call holding the line",
            "isolation": "coroutine",
            "audit_file": "on (batched fsync)" if audit else "off",
            "answer_latency": "from the request frame written to the socket to the answer "
            "read back by the server's read loop",
            "worker_answer": "from the socket data holding the offer reaching the worker's "
            "read loop to the answer written back (the worker's /snapshot offer_answers; "
            "percentiles are bucket upper bounds)",
            "retry": f"a burst during which other processes used more than "
            f"{OTHER_LOAD_LIMIT:g}% of a core is taken again (at most {MAX_TRIES} tries), and "
            "the least disturbed one is kept; a burst that is not exact is always kept",
        },
        "summary": {
            "bursts_run": len(all_bursts),
            "bursts_exact": sum(1 for b in all_bursts if b.exact),
            "answer_p50_ms": percentile(lat, 50),
            "answer_p99_ms": percentile(lat, 99),
            "answer_max_ms": max(lat) if lat else None,
            "worker_answers": sum(own),
            "worker_answer_p50_ms": answer_percentile(own, 50),
            "worker_answer_p99_ms": answer_percentile(own, 99),
        },
        "lone_offers": {
            "what": "one offer at a time to an idle worker, before each cap's bursts",
            "count": len(lone),
            "answer_p50_ms": percentile(lone, 50),
            "answer_p99_ms": percentile(lone, 99),
            "answer_max_ms": max(lone) if lone else None,
        },
        "rows": rows,
        "bursts": [asdict(b) for b in all_bursts],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--caps", default="5,10,25")
    ap.add_argument("--bursts", default="20,50,100")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="keep worker logs here")
    ap.add_argument(
        "--quick", action="store_true", help="the issue's target burst: cap 25, burst 50, once"
    )
    ap.add_argument(
        "--audit-file",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="workers write an audit file (default: on)",
    )
    ap.add_argument("--out", default=None, help="result name under bench/results/")
    a = ap.parse_args(argv)
    console.print(f"workers run openrtc from a copy of src/: {pin_source()}")
    caps = [int(x) for x in a.caps.split(",")]
    bursts = [int(x) for x in a.bursts.split(",")]
    reps = a.reps
    if a.quick:
        caps, bursts, reps = [25], [50], 1
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="openrtc-admission-"))
    console.print(f"worker logs in {workdir}")
    result = asyncio.run(main_async(caps, bursts, reps, workdir, a.audit_file))
    name = a.out or ("admission-quick" if a.quick else "admission")
    console.print(f"wrote {write_result(name, result)}")


if __name__ == "__main__":
    main()
