"""Deploy: consecutive rolling deploys of one fleet under one steady stream of calls.

One loopback dispatch server runs in this process for the whole run, and one traffic
generator places simulated calls (text mode unless `--mode audio`, each 1-5 s long, 4 a
second) from the moment the first fleet is accepting to the end, so calls are in flight
at every cutover. The fleet is K real `openrtc start` subprocesses (default 2) at
v1.0.0. Deploy i rolls it from v(i) to v(i+1) one worker at a time, as a platform with a
surge of one and none unavailable does: start one new worker, wait until it is registered
with the server and accepting, send SIGTERM to one old worker, then do the same for the
next slot. Old workers drain while the next new one starts; the deploy ends when its last
old worker has exited, and after a short steady pause the next one begins. No manifest is
used, so SIGTERM alone takes a worker out of rotation. After the last deploy the traffic
stops, every call is waited on, and the last fleet is drained the same way.

Per old worker: SIGTERM -> the server records WS_FULL (ms), its last call ending -> its
process exiting (ms), its exit code, the calls it had live at SIGTERM, and the offers the
server still sent it after SIGTERM and how many of those it took (must be 0). Per deploy:
the calls placed from its start to the next deploy's start, and how they ended. Over the
run every placed call is accounted for: completed + failed + cancelled + dropped (lost
with a worker that vanished) + unserved (no worker took it in time) = placed; a call
still open at the end is counted as unfinished and breaks the equation.

    PYTHONPATH=src .venv/bin/python bench/deploy.py            # 10 deploys, ~2 min
    PYTHONPATH=src .venv/bin/python bench/deploy.py --quick    # 2 deploys
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import random
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from benchkit import (
    OtherLoad,
    Worker,
    command_line,
    machine_info,
    now_iso,
    percentile,
    pin_source,
    server_env,
    write_result,
)
from rich.console import Console
from rich.table import Table

from openrtc.audit import verify_chain
from openrtc.deploy.rehearsal.runner import sigterm_to_full
from openrtc.devserver import DispatchServer
from openrtc.devserver.records import DevEvent, JobRecord, JobState
from openrtc.simulation import MODES, CallMode, CallScript

console = Console()

START_TIMEOUT = 60.0
FINAL_STATES = frozenset(state for state in JobState if state.final)
OUTCOME_KEYS = {
    JobState.SUCCESS: "calls_completed",
    JobState.FAILED: "calls_failed",
    JobState.CANCELLED: "calls_cancelled",
    JobState.DROPPED: "calls_dropped",
    JobState.UNSERVED: "calls_unserved",
}
TURNS = ("hello", "what can you do")


def version_name(n: int) -> str:
    return f"v{n}.0.0"


# --- what the numbers are made of (pure) ------------------------------------------------------


def outcomes(jobs: Iterable[JobRecord]) -> dict[str, int]:
    """Calls placed and how each ended; a call in no final state counts as unfinished."""
    counts = dict.fromkeys(["calls_placed", *OUTCOME_KEYS.values(), "calls_unfinished"], 0)
    for job in jobs:
        counts["calls_placed"] += 1
        counts[OUTCOME_KEYS.get(job.state, "calls_unfinished")] += 1
    return counts


def accounted(counts: dict[str, int], placed: int) -> bool:
    """Every call the generator placed ended in exactly one final state."""
    ended = sum(counts[key] for key in OUTCOME_KEYS.values())
    return counts["calls_unfinished"] == 0 and ended == placed == counts["calls_placed"]


def window_of(t: float, starts: Sequence[float]) -> int:
    """Deploy number whose window holds t: 0 before the first deploy started, else 1..N.

    Deploy i's window runs from its start to deploy i+1's start; the last one to the end.
    """
    return bisect.bisect_right(starts, t)


def live_at(jobs: Iterable[JobRecord], worker_id: str, t: float | None) -> int:
    """Calls the worker held at time t (assigned by then and not yet ended)."""
    if t is None:
        return 0
    return sum(
        1
        for j in jobs
        if j.worker_id == worker_id
        and j.assigned_at is not None
        and j.assigned_at <= t
        and (j.ended_at is None or j.ended_at > t)
    )


def offers_after(
    events: Iterable[DevEvent], worker_id: str, since: float | None
) -> tuple[int, int]:
    """(offers the server sent the worker after `since`, how many of those it accepted)."""
    if since is None:
        return 0, 0
    sent: set[str] = set()
    offered = taken = 0
    for e in events:
        if e.fields.get("worker_id") != worker_id or e.ts <= since:
            continue
        job_id = str(e.fields.get("job_id"))
        if e.kind == "job_offered":
            offered += 1
            sent.add(job_id)
        elif e.kind == "job_offer_answered" and job_id in sent:
            sent.discard(job_id)
            taken += 1 if e.fields.get("available") else 0
    return offered, taken


def last_call_end_to_exit_ms(
    jobs: Iterable[JobRecord], worker_id: str, exited_at: float | None
) -> float | None:
    """Milliseconds from the worker's last call ending to its process exiting."""
    ends = [j.ended_at for j in jobs if j.worker_id == worker_id and j.ended_at is not None]
    if not ends or exited_at is None:
        return None
    return round((exited_at - max(ends)) * 1000, 1)


def deploy_ok(row: dict[str, Any]) -> bool:
    """Every call of the window completed, no old worker took a call after SIGTERM, all exit 0."""
    return (
        not row["problems"]
        and row["calls_completed"] == row["calls_placed"]
        and not any(row["calls_taken_after_sigterm"].values())
        and all(code == 0 for code in row["exit_codes"].values())
    )


# --- one run ----------------------------------------------------------------------------------


@dataclass
class DeployRecord:
    """What the run saw of one deploy as it happened; measured once the run is over."""

    deploy: int
    from_version: str
    to_version: str
    started_at: float
    ended_at: float | None = None
    old: list[Worker] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class SteadyTraffic:
    """Places one simulated call every 1/rate seconds until stopped."""

    def __init__(
        self,
        server: DispatchServer,
        *,
        rate: float,
        hold_s: tuple[float, float],
        mode: CallMode,
        seed: int,
    ) -> None:
        self.server = server
        self.rate = rate
        self.hold_s = hold_s
        self.mode = mode
        self.jobs: list[JobRecord] = []
        self.placed = 0
        self._rng = random.Random(seed)
        self._stop = asyncio.Event()

    def script(self, i: int) -> dict[str, Any]:
        hold = self._rng.uniform(*self.hold_s)
        turns = TURNS[: 1 + i % 2]
        return CallScript(turns=turns, mode=self.mode, pause_s=0.1, hold_s=hold).to_dict()

    async def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.jobs.append(await self.server.dispatch(simulated_call=self.script(self.placed)))
            self.placed += 1
            next_at += 1.0 / self.rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()


class RollingDeploys:
    """One fleet, one server, N deploys in a row.

    `fleet` is the workers serving now (a deploy swaps them one by one, so it is right
    even when a deploy stops halfway); `workers` is every worker ever started.
    """

    def __init__(self, args: argparse.Namespace, server: DispatchServer, workdir: Path) -> None:
        self.args = args
        self.server = server
        self.workdir = workdir
        self.env = {**server_env(server), "OPENRTC_DRAIN_TIMEOUT": str(args.drain_timeout)}
        self.workers: list[Worker] = []
        self.fleet: list[Worker] = []
        self.last_fleet: list[Worker] = []
        self.deploys: list[DeployRecord] = []
        self.problems: list[str] = []
        self.traffic = SteadyTraffic(
            server,
            rate=args.rate,
            hold_s=(args.hold[0], args.hold[1]),
            mode=cast(CallMode, args.mode),
            seed=args.seed,
        )

    async def start_worker(self, version: str, slot: int) -> Worker:
        """Start one worker; return once the server has it registered and it takes calls."""
        name = f"{version}-{slot}"
        w = Worker(
            args=[
                "--deployment-version",
                version,
                "--audit-path",
                str(self.workdir / f"audit-{name}.jsonl"),
            ],
            env=self.env,
            log_path=self.workdir / f"{name}.log",
            name=name,
        )
        self.workers.append(w)
        await w.start()
        await w.wait_accepting(START_TIMEOUT)
        await self.server.wait_for_event("worker_registered", START_TIMEOUT, worker_id=w.worker_id)
        return w

    async def retire(self, w: Worker, problems: list[str]) -> None:
        """Wait for a worker sent SIGTERM to exit; kill it if its drain runs out."""
        limit = self.args.drain_timeout + 10
        if await w.wait_exit(limit) is None:
            problems.append(f"{w.name} had not exited {limit:g}s after SIGTERM; killed")
            await w.kill()

    async def roll(self, n: int) -> None:
        """Deploy n: replace each old worker by a new one, one slot at a time."""
        old_fleet = list(self.fleet)
        record = DeployRecord(n, version_name(n), version_name(n + 1), time.time(), old=old_fleet)
        self.deploys.append(record)
        exits: list[asyncio.Task[None]] = []
        try:
            for slot, old in enumerate(old_fleet, 1):
                self.fleet.append(await self.start_worker(record.to_version, slot))
                old.terminate()
                self.fleet.remove(old)
                exits.append(asyncio.create_task(self.retire(old, record.problems)))
        except (RuntimeError, TimeoutError) as exc:
            record.problems.append(f"deploy stopped halfway: {exc}")
            raise
        finally:
            await asyncio.gather(*exits)
            record.ended_at = time.time()
        took = record.ended_at - record.started_at
        console.print(
            f"deploy {n}: {record.from_version} -> {record.to_version} in {took:.1f}s, "
            f"old exit codes {[w.exit_code for w in old_fleet]}"
        )

    async def run(self) -> None:
        self.fleet = list(
            await asyncio.gather(
                *(self.start_worker(version_name(1), s) for s in range(1, self.args.workers + 1))
            )
        )
        traffic = asyncio.create_task(self.traffic.run())
        # steady traffic before the first deploy, so calls are live on every v1 worker
        await asyncio.sleep(self.args.warmup)
        try:
            for n in range(1, self.args.deploys + 1):
                await self.roll(n)
                await asyncio.sleep(self.args.pause)
        except (RuntimeError, TimeoutError) as exc:
            self.problems.append(f"stopped after {len(self.deploys)} deploy(s): {exc}")
        self.traffic.stop()
        await traffic
        console.print(f"traffic stopped after {self.traffic.placed} calls; waiting for them")
        await self.settle()
        self.last_fleet = list(self.fleet)
        for w in self.last_fleet:
            w.terminate()
        await asyncio.gather(*(self.retire(w, self.problems) for w in self.last_fleet))

    async def settle(self) -> None:
        """Wait until every placed call is in a final state, or the drain limit passes."""
        deadline = time.monotonic() + self.args.drain_timeout + 30
        for job in self.traffic.jobs:
            if job.state.final:
                continue
            with contextlib.suppress(TimeoutError):
                await self.server.wait_job(
                    job.id, FINAL_STATES, timeout=max(0.1, deadline - time.monotonic())
                )


# --- results ----------------------------------------------------------------------------------


def deploy_row(
    record: DeployRecord,
    placed: list[JobRecord],
    jobs: list[JobRecord],
    events: list[DevEvent],
) -> dict[str, Any]:
    """One deploy: its window's calls and what each old worker did from SIGTERM to exit."""
    per_worker: dict[str, dict[str, Any]] = {
        key: {}
        for key in (
            "exit_codes",
            "sigterm_to_full_ms",
            "last_call_end_to_exit_ms",
            "sigterm_to_exit_s",
            "calls_live_at_sigterm",
            "offers_after_sigterm",
            "calls_taken_after_sigterm",
        )
    }
    for w in record.old:
        offered, taken = offers_after(events, w.worker_id, w.sigterm_at)
        exit_s = None
        if w.exited_at is not None and w.sigterm_at is not None:
            exit_s = round(w.exited_at - w.sigterm_at, 3)
        per_worker["exit_codes"][w.name] = w.exit_code
        # the rehearsal's definition, on the same worker class
        per_worker["sigterm_to_full_ms"][w.name] = sigterm_to_full(events, w)
        per_worker["last_call_end_to_exit_ms"][w.name] = last_call_end_to_exit_ms(
            jobs, w.worker_id, w.exited_at
        )
        per_worker["sigterm_to_exit_s"][w.name] = exit_s
        per_worker["calls_live_at_sigterm"][w.name] = live_at(jobs, w.worker_id, w.sigterm_at)
        per_worker["offers_after_sigterm"][w.name] = offered
        per_worker["calls_taken_after_sigterm"][w.name] = taken
    duration = None
    if record.ended_at is not None:
        duration = round(record.ended_at - record.started_at, 2)
    row: dict[str, Any] = {
        "deploy": record.deploy,
        "from_version": record.from_version,
        "to_version": record.to_version,
        **outcomes(placed),
        **per_worker,
        "duration_s": duration,
        "problems": list(record.problems),
    }
    row["ok"] = deploy_ok(row)
    return row


def deploy_rows(
    records: list[DeployRecord], jobs: list[JobRecord], events: list[DevEvent]
) -> tuple[list[dict[str, Any]], list[JobRecord]]:
    """A row per deploy, and the calls placed before the first deploy started."""
    starts = [r.started_at for r in records]
    windows: dict[int, list[JobRecord]] = {}
    for job in jobs:
        windows.setdefault(window_of(job.created_at, starts), []).append(job)
    rows = [deploy_row(r, windows.get(i, []), jobs, events) for i, r in enumerate(records, 1)]
    return rows, windows.get(0, [])


def summarize(rows: list[dict[str, Any]], totals: dict[str, int], placed: int) -> dict[str, Any]:
    """Pooled percentiles over every old worker of every deploy; call totals over the run."""

    def pooled(key: str) -> list[Any]:
        return [v for r in rows for v in r[key].values()]

    full = pooled("sigterm_to_full_ms")
    tail = [v for v in pooled("last_call_end_to_exit_ms") if v is not None]
    measured = [v for v in full if v is not None]
    return {
        "deploys": len(rows),
        "deploys_ok": sum(1 for r in rows if r["ok"]),
        "old_workers": len(pooled("exit_codes")),
        "sigterm_to_full_p50_ms": percentile(measured, 50),
        "sigterm_to_full_p99_ms": percentile(measured, 99),
        "sigterm_to_full_max_ms": max(measured, default=None),
        "sigterm_to_full_not_measured": len(full) - len(measured),
        "last_call_end_to_exit_p50_ms": percentile(tail, 50),
        "last_call_end_to_exit_p99_ms": percentile(tail, 99),
        "last_call_end_to_exit_max_ms": max(tail, default=None),
        **totals,
        "calls_accounted": accounted(totals, placed),
        "old_workers_with_live_calls_at_sigterm": sum(
            1 for n in pooled("calls_live_at_sigterm") if n > 0
        ),
        "offers_to_old_after_sigterm": sum(pooled("offers_after_sigterm")),
        "calls_taken_by_old_after_sigterm": sum(pooled("calls_taken_after_sigterm")),
        "nonzero_exits": sum(1 for c in pooled("exit_codes") if c != 0),
    }


def audit_chains(workdir: Path) -> tuple[bool, int, list[str]]:
    """(every worker's audit chain whole, records checked, what was wrong)."""
    ok, records, problems = True, 0, []
    for path in sorted(workdir.glob("audit-*.jsonl")):
        chain = verify_chain(path)
        records += chain.records
        if not chain.ok:
            ok = False
            problems.append(f"audit chain {path.name}: {chain.reason}")
    return ok, records, problems


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Consecutive rolling deploys under steady traffic (SIGTERM cutover)")
    for col in ("#", "versions", "ok", "placed", "done", "failed", "dropped", "unserved",
                "live at SIGTERM", "offers after SIGTERM", "SIGTERM->full ms",
                "last call->exit ms", "exit codes"):  # fmt: skip
        t.add_column(col)

    def join(values: dict[str, Any]) -> str:
        return ", ".join("n/a" if v is None else f"{v:.0f}" for v in values.values())

    for r in rows:
        t.add_row(
            str(r["deploy"]),
            f"{r['from_version']} -> {r['to_version']}",
            "yes" if r["ok"] else "NO",
            str(r["calls_placed"]),
            str(r["calls_completed"]),
            str(r["calls_failed"]),
            str(r["calls_dropped"]),
            str(r["calls_unserved"]),
            join(r["calls_live_at_sigterm"]),
            join(r["offers_after_sigterm"]),
            join(r["sigterm_to_full_ms"]),
            join(r["last_call_end_to_exit_ms"]),
            ", ".join(str(c) for c in r["exit_codes"].values()),
        )
    return t


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    machine = machine_info()
    load = OtherLoad()
    async with DispatchServer(dispatch_deadline=10.0, offer_timeout=2.0) as server:
        run = RollingDeploys(args, server, workdir)
        try:
            await run.run()
        finally:
            await asyncio.gather(*(w.kill() for w in run.workers))
        jobs = list(run.traffic.jobs)
        events = server.events()
    rows, before = deploy_rows(run.deploys, jobs, events)
    chain_ok, chain_records, chain_problems = audit_chains(workdir)
    summary = summarize(rows, outcomes(jobs), run.traffic.placed)
    summary.update(
        calls_before_first_deploy=len(before),
        final_fleet_nonzero_exits=sum(1 for w in run.last_fleet if w.exit_code != 0),
        audit_chain_ok=chain_ok,
        audit_records=chain_records,
    )
    problems = run.problems + chain_problems
    duration = round(time.monotonic() - started, 1)
    console.print(table(rows))
    console.print(summary)
    for p in problems:
        console.print(f"[red]problem:[/] {p}")
    console.print(f"took {duration:.0f}s")
    return {
        "benchmark": "deploy",
        "date": now_iso(),
        "machine": machine,
        "command": command_line(),
        "duration_s": duration,
        "other_cpu_pct": load.pct_of_a_core(),
        "config": {
            "deploys": args.deploys,
            "workers_per_version": args.workers,
            "rollout": "one worker at a time: start a new one, once it accepts SIGTERM an old one",
            "call_rate_per_s": args.rate,
            "call_hold_s": list(args.hold),
            "call_mode": args.mode,
            "warmup_s": args.warmup,
            "pause_between_deploys_s": args.pause,
            "drain_timeout_s": args.drain_timeout,
            "use_manifest": False,
        },
        "summary": summary,
        "deploys": rows,
        "final_fleet_exit_codes": {w.name: w.exit_code for w in run.last_fleet},
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--deploys", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="workers in the fleet (K)")
    ap.add_argument("--rate", type=float, default=4.0, help="calls placed per second")
    ap.add_argument("--hold", type=float, nargs=2, default=[1.0, 5.0], metavar=("MIN", "MAX"),
                    help="seconds each caller stays on the line after its last turn")  # fmt: skip
    ap.add_argument("--mode", choices=MODES, default="text", help="simulated call mode")
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds of traffic before deploy 1")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds of traffic between deploys")
    ap.add_argument("--drain-timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs and audit files here")
    ap.add_argument("--quick", action="store_true", help="smoke run: two deploys")
    ap.add_argument("--out", default=None, help="result name under bench/results/")
    a = ap.parse_args(argv)
    console.print(f"workers run openrtc from a copy of src/: {pin_source()}")
    if a.quick:
        a.deploys = 2
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="openrtc-deploy-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"worker logs in {workdir}")
    result = asyncio.run(main_async(a, workdir))
    name = a.out or ("deploy-quick" if a.quick else "deploy")
    console.print(f"wrote {write_result(name, result)}")


if __name__ == "__main__":
    main()
