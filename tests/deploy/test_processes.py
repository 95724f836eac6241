"""`openrtc start --processes 2`: real processes, one parent, two workers at the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from typer.testing import CliRunner

from openrtc.audit import verify_chain
from openrtc.cli.main import app
from openrtc.deploy.rehearsal.workers import free_port
from openrtc.devserver import DispatchServer
from openrtc.ops.headroom import usable_cores
from openrtc.worker.lifespan import EXIT_OK
from tests.harness import agents_folder, wait_until


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    return agents_folder(tmp_path, "sales")


@pytest.fixture
async def server() -> AsyncIterator[DispatchServer]:
    async with DispatchServer(dispatch_deadline=5.0, offer_timeout=2.0) as s:
        yield s


class Worker:
    """A running `openrtc start --processes 2` and its parent's endpoint."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.get(self.url + path) as r:
            text = await r.text()
            return r.status, (json.loads(text) if path != "/metrics" else text)


@pytest.fixture
async def start(server: DispatchServer, agents_dir: Path, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Worker] = []

    async def run() -> Worker:
        port = free_port()
        env = {
            **os.environ,
            "LIVEKIT_URL": server.ws_url,
            "LIVEKIT_API_KEY": server.api_key,
            "LIVEKIT_API_SECRET": server.api_secret,
        }
        log = tmp_path / "worker.log"
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "openrtc.cli.main",
                "start",
                str(agents_dir),
                "--processes",
                "2",
                # one call per child: a second call can only go to the other child
                "--max-concurrent-sessions",
                "1",
                "--http-port",
                str(port),
                "--deployment-version",
                "v1",
                "--audit-path",
                str(tmp_path / "audit.jsonl"),
                "--log-format",
                "text",
                env=env,
                stdout=out,
                stderr=out,
            )
        worker = Worker(proc, port, log)
        started.append(worker)
        await wait_until(lambda: len(connected(server)) == 2, timeout=90)
        return worker

    yield run
    for worker in started:
        kill_tree(worker.proc.pid)
        if worker.proc.returncode is None:
            await worker.proc.wait()


def gone(p: psutil.Process) -> bool:
    try:
        return bool(p.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def kill_tree(pid: int) -> None:
    """The parent and every process it started (the children outlive a killed parent)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


async def full_snapshot(worker: Worker) -> dict[str, Any]:
    """The parent's /snapshot once it holds a registered snapshot of every child."""
    for _ in range(100):
        status, snap = await worker.get("/snapshot")
        children = snap.get("children", []) if status == 200 else []
        if children and all((c["snapshot"] or {}).get("worker_id") for c in children):
            return dict(snap)
        await asyncio.sleep(0.2)
    raise AssertionError(f"/snapshot never covered every process: {snap}")


def connected(server: DispatchServer) -> list[str]:
    return [w.id for w in server.workers() if w.connected]


def call(hold_s: float) -> dict[str, object]:
    return {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": hold_s}


async def dispatch_running(server: DispatchServer, hold_s: float) -> str:
    job = await server.dispatch(simulated_call=call(hold_s))
    running = await server.wait_job(job.id, {"running"}, timeout=30)
    assert running.worker_id is not None
    return running.worker_id


async def test_two_processes_register_take_calls_and_drain_on_one_sigterm(
    server: DispatchServer, start: Any, tmp_path: Path
) -> None:
    worker = await start()
    for _ in range(100):
        status, ready = await worker.get("/readyz")
        if ready["ready_processes"] == 2:
            break
        await asyncio.sleep(0.2)
    assert status == 200 and ready["ready"] and ready["ready_processes"] == 2, ready

    jobs = []
    for _ in range(2):
        job = await server.dispatch(simulated_call=call(10.0))
        jobs.append(await server.wait_job(job.id, {"running"}, timeout=30))
    assert {j.worker_id for j in jobs} == set(connected(server)), "each process took one call"

    snap = await full_snapshot(worker)
    assert snap["processes"] == 2
    assert [c["process"] for c in snap["children"]] == [1, 2]
    ids = {c["snapshot"]["worker_id"] for c in snap["children"]}
    assert ids == {j.worker_id for j in jobs}
    assert snap["active_sessions"] == 2
    cores = usable_cores()
    for child in snap["children"]:
        # two processes on the box: each counts its CPU against half its cores
        assert child["snapshot"]["load"]["cpu_cores"] == pytest.approx(cores / 2, abs=1e-3)
    status, metrics = await worker.get("/metrics")
    for index in ("1", "2"):
        assert re.search(rf'openrtc_active_sessions\{{[^}}]*process="{index}"[^}}]*\}} 1', metrics)
    assert "openrtc_processes_up 2.0" in metrics

    assert all(server.job(j.id).state.value == "running" for j in jobs), "live at SIGTERM"
    worker.proc.send_signal(signal.SIGTERM)
    for _ in range(50):
        status, ready = await worker.get("/readyz")
        if status == 503:
            break
        await asyncio.sleep(0.1)
    assert status == 503 and ready["reason"] == "draining", ready
    assert await asyncio.wait_for(worker.proc.wait(), 60) == EXIT_OK
    for job in jobs:
        done = await server.wait_job(job.id, {"success", "failed", "cancelled"}, timeout=5)
        assert done.state.value == "success"
    log = worker.log.read_text()
    assert "Traceback" not in log
    for name in ("audit.jsonl", "audit.1.jsonl", "audit.2.jsonl"):
        report = verify_chain(tmp_path / name)
        assert report.ok, (name, report.reason)
    assert "deployment.drain_requested" in (tmp_path / "audit.jsonl").read_text()


async def test_a_killed_process_is_replaced_while_the_other_keeps_its_call(
    server: DispatchServer, start: Any, tmp_path: Path
) -> None:
    worker = await start()
    doomed = await server.dispatch(simulated_call=call(60.0))
    doomed_worker = (await server.wait_job(doomed.id, {"running"}, timeout=30)).worker_id
    kept = await server.dispatch(simulated_call=call(12.0))
    kept_worker = (await server.wait_job(kept.id, {"running"}, timeout=30)).worker_id
    assert doomed_worker != kept_worker

    snap = await full_snapshot(worker)
    pid = next(c["pid"] for c in snap["children"] if c["snapshot"]["worker_id"] == doomed_worker)
    before = set(connected(server))
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: len(set(connected(server)) - before) == 1, timeout=60)
    assert kept_worker in connected(server) and doomed_worker not in connected(server)
    assert server.job(kept.id).state.value == "running"

    done = await server.wait_job(kept.id, {"success", "failed", "cancelled"}, timeout=30)
    assert done.state.value == "success"
    fresh = await dispatch_running(server, 0.5)
    assert fresh in connected(server)

    snap = await full_snapshot(worker)
    assert sum(c["restarts"] for c in snap["children"]) == 1
    assert all(c["state"] == "running" for c in snap["children"])
    log = worker.log.read_text()
    assert f"(pid {pid}) ended (signal 9)" in log
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "worker.process_restarted" in audit and str(pid) in audit

    # a parent killed outright leaves no orphan serving: each child drains by itself
    children = psutil.Process(worker.proc.pid).children(recursive=True)
    worker.proc.kill()
    await worker.proc.wait()
    await wait_until(lambda: not connected(server), timeout=30)
    await wait_until(lambda: all(map(gone, children)), timeout=30)
    assert worker.log.read_text().count("the supervising process is gone: draining") == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_process_count_is_one_line_and_exit_2(value: str, agents_dir: Path) -> None:
    result = CliRunner().invoke(app, ["start", str(agents_dir), "--processes", value])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "--processes" in lines[0] and "auto" in lines[0]


def test_dev_refuses_more_than_one_process(agents_dir: Path) -> None:
    result = CliRunner().invoke(app, ["dev", str(agents_dir), "--processes", "2"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --processes is for openrtc start; dev runs one process"
