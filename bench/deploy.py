"""Deploy: consecutive rolling deploys under steady traffic, and what each one cost.

Each deploy is one `openrtc.rehearsal.Rehearsal`: the loopback dispatch server in this
process, K old-version workers and K new-version workers as real `openrtc start`
subprocesses, a steady stream of simulated calls, and SIGTERM to every old worker. No
manifest is used (`use_manifest=False`), so SIGTERM alone takes the old workers out of
rotation, and the time from SIGTERM to the server hearing "full" is the cutover itself.

Per old worker: SIGTERM -> the server records WS_FULL (ms), and the worker's last call
ending -> its process exiting (ms). Per deploy: calls placed, completed, failed, dropped
(lost with a worker that vanished), unserved (no worker took them in time).

    PYTHONPATH=src .venv/bin/python bench/deploy.py            # 10 deploys, ~3 min
    PYTHONPATH=src .venv/bin/python bench/deploy.py --quick    # 1 deploy
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import (
    AGENTS,
    OtherLoad,
    command_line,
    machine_info,
    now_iso,
    percentile,
    pin_source,
    write_result,
)
from rich.console import Console
from rich.table import Table

from openrtc.rehearsal import Rehearsal, RehearsalConfig, RehearsalReport

console = Console()


def deploy_row(i: int, report: RehearsalReport) -> dict[str, Any]:
    return {
        "deploy": i,
        "ok": report.ok,
        "calls_placed": report.calls_placed,
        "calls_completed": report.calls_completed,
        "calls_failed": report.calls_failed,
        "calls_cancelled": report.calls_cancelled,
        "calls_dropped": report.calls_dropped,
        "calls_unserved": report.calls_unserved,
        "post_cutover_calls_on_old": report.post_cutover_calls_on_old,
        "exit_codes": dict(report.old_worker_exit_codes),
        "sigterm_to_full_ms": dict(report.sigterm_to_full_ms),
        "last_call_end_to_exit_ms": dict(report.last_call_end_to_exit_ms),
        "sigterm_to_exit_s": dict(report.old_worker_exit_seconds),
        "duration_s": report.duration_seconds,
        "problems": list(report.problems),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled percentiles over every old worker of every deploy, and totals."""
    full = [v for r in rows for v in r["sigterm_to_full_ms"].values() if v is not None]
    full_missing = sum(1 for r in rows for v in r["sigterm_to_full_ms"].values() if v is None)
    tail = [v for r in rows for v in r["last_call_end_to_exit_ms"].values() if v is not None]
    return {
        "deploys": len(rows),
        "deploys_ok": sum(1 for r in rows if r["ok"]),
        "old_workers": sum(len(r["exit_codes"]) for r in rows),
        "sigterm_to_full_p50_ms": percentile(full, 50),
        "sigterm_to_full_p99_ms": percentile(full, 99),
        "sigterm_to_full_max_ms": max(full) if full else None,
        "sigterm_to_full_not_measured": full_missing,
        "last_call_end_to_exit_p50_ms": percentile(tail, 50),
        "last_call_end_to_exit_p99_ms": percentile(tail, 99),
        "last_call_end_to_exit_max_ms": max(tail) if tail else None,
        "calls_placed": sum(r["calls_placed"] for r in rows),
        "calls_completed": sum(r["calls_completed"] for r in rows),
        "calls_dropped": sum(r["calls_dropped"] for r in rows),
        "calls_unserved": sum(r["calls_unserved"] for r in rows),
        "calls_failed": sum(r["calls_failed"] for r in rows),
        "calls_cancelled": sum(r["calls_cancelled"] for r in rows),
        "nonzero_exits": sum(1 for r in rows for c in r["exit_codes"].values() if c != 0),
    }


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Rolling deploys under steady traffic (SIGTERM cutover)")
    for col in ("#", "ok", "placed", "done", "failed", "dropped", "unserved",
                "SIGTERM->full ms", "last call->exit ms", "exit codes"):  # fmt: skip
        t.add_column(col)
    for r in rows:
        t.add_row(
            str(r["deploy"]),
            "yes" if r["ok"] else "NO",
            str(r["calls_placed"]),
            str(r["calls_completed"]),
            str(r["calls_failed"]),
            str(r["calls_dropped"]),
            str(r["calls_unserved"]),
            ", ".join(
                f"{v:.0f}" if v is not None else "n/a" for v in r["sigterm_to_full_ms"].values()
            ),
            ", ".join(
                f"{v:.0f}" if v is not None else "n/a"
                for v in r["last_call_end_to_exit_ms"].values()
            ),
            ", ".join(str(c) for c in r["exit_codes"].values()),
        )
    return t


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    machine = machine_info()
    load = OtherLoad()
    rows: list[dict[str, Any]] = []
    for i in range(1, args.deploys + 1):
        config = RehearsalConfig(
            agents_dir=AGENTS,
            workers=args.workers,
            calls=args.calls,
            call_rate=args.rate,
            use_manifest=False,
            seed=i,
            workdir=workdir / f"deploy-{i}",
        )
        report = await Rehearsal(config).run()
        row = deploy_row(i, report)
        rows.append(row)
        console.print(
            f"deploy {i}: {'PASS' if report.ok else 'FAIL'} in {report.duration_seconds:.0f}s, "
            f"dropped {report.calls_dropped}, SIGTERM->full {row['sigterm_to_full_ms']}, "
            f"last call->exit {row['last_call_end_to_exit_ms']}"
        )
        for p in report.problems:
            console.print(f"  [red]problem:[/] {p}")
    summary = summarize(rows)
    duration = round(time.monotonic() - started, 1)
    console.print(table(rows))
    console.print(summary)
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
            "calls_per_deploy": args.calls,
            "call_rate_per_s": args.rate,
            "use_manifest": False,
            "call": "text-mode simulated calls of 0.5-4 s (rehearsal default)",
        },
        "summary": summary,
        "deploys": rows,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--deploys", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="workers per version")
    ap.add_argument("--calls", type=int, default=40, help="calls per deploy")
    ap.add_argument("--rate", type=float, default=4.0, help="calls placed per second")
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs and audit files here")
    ap.add_argument("--quick", action="store_true", help="smoke run: one deploy")
    ap.add_argument("--out", default=None, help="result name under bench/results/")
    a = ap.parse_args(argv)
    console.print(f"workers run openrtc from a copy of src/: {pin_source()}")
    if a.quick:
        a.deploys = 1
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="openrtc-deploy-"))
    console.print(f"worker logs in {workdir}")
    result = asyncio.run(main_async(a, workdir))
    name = a.out or ("deploy-quick" if a.quick else "deploy")
    console.print(f"wrote {write_result(name, result)}")


if __name__ == "__main__":
    main()
