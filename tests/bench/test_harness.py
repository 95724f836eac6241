"""benchkit.Worker, the one way every benchmark starts a worker: real processes, real signals."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from benchkit import Worker, server_env
from cpu_measure import WORKER_SCRIPT

from openrtc.devserver import DispatchServer
from tests.harness import wait_until

VERSION = ("--deployment-version", "v2p")


async def test_a_cli_worker_registers_accepts_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    async with DispatchServer(dispatch_deadline=5.0, offer_timeout=2.0) as server:
        w = Worker(
            args=["--deployment-version", "v9.0.0"],
            env=server_env(server),
            log_path=tmp_path / "w.log",
            name="v9",
        )
        try:
            await w.start()
            snap = await w.wait_accepting(60.0)
            assert snap["deployment_version"] == "v9.0.0"
            assert server.worker(w.worker_id) is not None
            assert w.cpu_seconds() > 0 and w.pss_mb()[0] > 0
            mark = w.log_size()
            w.terminate()
            assert await w.wait_exit(30.0) == 0
        finally:
            await w.kill()
    assert w.exit_code == 0 and w.sigterm_at is not None and w.exited_at is not None
    assert w.exited_at >= w.sigterm_at
    assert w.log_lines(mark), "the worker logged nothing while draining"
    assert len(w.log_lines()) > len(w.log_lines(mark))


async def test_a_worker_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    w = Worker(
        args=["--isolation", "nonsense"],
        env={"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"},
        log_path=tmp_path / "bad.log",
        name="bad",
    )
    try:
        await w.start()
        with pytest.raises(RuntimeError, match=r"worker bad exited with 2 .*bad\.log"):
            await w.wait_accepting(30.0)
    finally:
        await w.kill()
    assert any("--isolation" in line for line in w.log_lines())


async def test_the_cpu_tools_worker_starts_through_the_same_harness(tmp_path: Path) -> None:
    stats = tmp_path / "stats.jsonl"
    async with DispatchServer(dispatch_deadline=5.0, offer_timeout=2.0) as server:
        w = Worker(
            args=[str(stats)],
            env=server_env(server),
            log_path=tmp_path / "cpu.log",
            command=[sys.executable, str(WORKER_SCRIPT)],
        )
        try:
            await w.start()
            await server.wait_for_worker(timeout=60.0)
            await wait_until(lambda: len(_lines(stats)) >= 2, timeout=30.0)
            await w.stop(30.0)
        finally:
            await w.kill()
    assert w.exit_code == 0
    line = _lines(stats)[-1]
    assert line["live_calls"] == 0 and line["cpu"] > 0 and "threads" in line


def _lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(raw) for raw in path.read_text().splitlines() if raw.strip()]


async def test_a_two_process_worker_is_read_whole_each_child_counted(tmp_path: Path) -> None:
    """Under --processes 2 the harness waits for both children, and the numbers a benchmark
    reads (call_stats, pids, log lines) come from both of them, not from the parent alone."""
    from benchkit import call_stats, snapshot_pids, worker_snapshots

    from openrtc.simulation import CallScript

    async with DispatchServer(dispatch_deadline=10.0, offer_timeout=5.0) as server:
        w = Worker(
            # a cap of one call per child: the second call can only go to the other one
            args=["--processes", "2", "--max-concurrent-sessions", "1", *VERSION],
            env={**server_env(server), "OPENRTC_CALL_STATS": "1"},
            log_path=tmp_path / "w.log",
            name="v2p",
        )
        try:
            await w.start()
            snap = await w.wait_accepting(90.0)
            ids = w.worker_id.split(",")
            assert len(ids) == 2 and all(server.worker(i) is not None for i in ids)
            assert snap["processes"] == 2 and len(snapshot_pids(snap)) == 2
            script = CallScript(turns=("hello there",), mode="audio", hold_s=30.0).to_dict()
            jobs = [await server.dispatch(simulated_call=script) for _ in range(2)]
            for job in jobs:
                await server.wait_job(job.id, {"running"}, timeout=30)
            assert {job.worker_id for job in jobs} == set(ids), "one call per child"

            deadline = asyncio.get_running_loop().time() + 30
            while True:  # until both children's VADs have heard their caller
                snap = await w.snapshot() or {}
                kids = worker_snapshots(snap)
                if sum(1 for k in kids if k["call_stats"].get("vad_frames_pushed")) == 2:
                    break
                assert asyncio.get_running_loop().time() < deadline, snap
                await asyncio.sleep(0.5)
            per_child = [k["call_stats"]["vad_frames_pushed"] for k in worker_snapshots(snap)]
            total = call_stats(snap)
            assert total["vad_frames_pushed"] == sum(per_child)
            assert sum(total["loop_lag_hist"]) == sum(
                sum(k["call_stats"]["loop_lag_hist"]) for k in worker_snapshots(snap)
            )
            pids = {json.loads(line).get("pid") for line in w.log_lines() if line.startswith("{")}
            assert snapshot_pids(snap) <= pids, "both children log into the worker's log"
        finally:
            await w.kill()
