"""Memory of `openrtc start --processes N`: what each added worker process costs.

For each N a fresh `openrtc start examples/agents --processes N` runs as a subprocess
against the loopback dispatch server in this process. Once every process registered,
one audio-mode simulated call per process is dispatched (so each child runs Silero and
the end-of-turn model at least once) and, while they are live, every process of the
worker's tree is measured with psutil: RSS, PSS (shared pages split between the
processes that map them) and USS (pages only that process holds). A child's USS is what
one more process costs the box; the tree's PSS is what the whole worker costs.

    PYTHONPATH=src .venv/bin/python bench/processes.py               # N = 1, 2, 4 (~1.5 min)
    PYTHONPATH=src .venv/bin/python bench/processes.py --counts 2    # one N
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import psutil
from benchkit import (
    MB,
    Worker,
    command_line,
    machine_info,
    now_iso,
    pin_source,
    server_env,
    write_result,
)
from rich.console import Console
from rich.table import Table

from openrtc.deploy.rehearsal.workers import process_tree
from openrtc.devserver import DispatchServer
from openrtc.simulation.script import CallScript

SETTLE_S = 5.0
"""Seconds the calls run before the measurement (the models have run by then)."""


def role(p: psutil.Process, root: int) -> str:
    if p.pid == root:
        return "parent"
    cmd = " ".join(p.cmdline())
    if "forkserver" in cmd and p.ppid() == root:
        return "fork server"  # the workers are its forks: same command line, another parent
    if "resource_tracker" in cmd:
        return "resource tracker"
    return "worker"


def measure(root: int) -> list[dict[str, Any]]:
    rows = []
    for p in process_tree(root):
        try:
            m = p.memory_full_info()
            rows.append(
                {
                    "pid": p.pid,
                    "role": role(p, root),
                    "rss_mb": round(m.rss / MB, 1),
                    "pss_mb": round(m.pss / MB, 1),
                    "uss_mb": round(m.uss / MB, 1),
                }
            )
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return rows


async def one(count: int, workdir: Path) -> dict[str, Any]:
    async with DispatchServer(dispatch_deadline=10.0, offer_timeout=2.0) as server:
        worker = Worker(
            args=["--processes", str(count)],
            env=server_env(server),
            log_path=workdir / f"processes-{count}.log",
            name=f"processes-{count}",
        )
        await worker.start()
        try:
            deadline = asyncio.get_running_loop().time() + 120
            while sum(w.connected for w in server.workers()) < count:
                if asyncio.get_running_loop().time() > deadline or not worker.alive:
                    raise RuntimeError(f"{count} processes did not register; see {worker.log_path}")
                await asyncio.sleep(0.2)
            script = CallScript(turns=("hello there",), mode="audio", hold_s=60.0).to_dict()
            for _ in range(count):
                job = await server.dispatch(agent_name="", simulated_call=script)
                await server.wait_job(job.id, {"running"}, timeout=30)
            await asyncio.sleep(SETTLE_S)
            rows = measure(worker.pid)
        finally:
            await worker.kill()
    workers = [r for r in rows if r["role"] == "worker"]
    return {
        "processes": count,
        "tree_pss_mb": round(sum(r["pss_mb"] for r in rows), 1),
        "worker_uss_mb": [r["uss_mb"] for r in workers],
        "rows": rows,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    pin_source()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="openrtc-processes-"))
    started = now_iso()
    runs = [await one(n, workdir) for n in args.counts]
    table = Table("N", "process", "RSS MB", "PSS MB", "USS MB")
    for run in runs:
        for r in run["rows"]:
            table.add_row(
                str(run["processes"]),
                r["role"],
                str(r["rss_mb"]),
                str(r["pss_mb"]),
                str(r["uss_mb"]),
            )
        table.add_row(str(run["processes"]), "[b]tree[/b]", "", str(run["tree_pss_mb"]), "")
    Console().print(table)
    path = write_result(
        "processes",
        {
            "machine": machine_info(),
            "date": started,
            "command": command_line(),
            "settle_s": SETTLE_S,
            "runs": runs,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
