"""`openrtc top` and `openrtc fleet` against two running workers, and --metrics-jsonl."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from livekit.agents import Agent

from openrtc import AgentPool
from openrtc.config import OpsEndpoint, PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def pool_at(
    version: str, ops: OpsEndpoint | None = None, max_concurrent_sessions: int | None = None
) -> AgentPool:
    return AgentPool(
        agents={"sales": Sales},
        deployment_version=version,
        max_concurrent_sessions=max_concurrent_sessions,
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(
            runtime=Runtime(prewarm_models=False), ops=ops or OpsEndpoint(port=None)
        ),
    )


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openrtc.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_top_and_fleet_read_two_live_workers(devserver: DispatchServer) -> None:
    v1, v2 = pool_at("v1.0.0", max_concurrent_sessions=1), pool_at("v2.0.0")
    hold = {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": 30}
    async with running(v1, devserver, http_port=0) as a:
        await devserver.dispatch(metadata={"tenant": "acme"}, simulated_call=hold)
        await wait_until(lambda: v1.runtime_snapshot().active_sessions == 1)
        async with running(v2, devserver, http_port=0) as b:
            assert a.lifespan.ops is not None and b.lifespan.ops is not None
            for _ in range(2):
                await devserver.dispatch(metadata={"tenant": "acme"}, simulated_call=hold)
            await wait_until(lambda: v2.runtime_snapshot().active_sessions == 2)
            await _read_both(a.lifespan.ops.url, b.lifespan.ops.url)


async def _read_both(url_v1: str, url_v2: str) -> None:
    """v1 (full at one call) and v2 (two calls) as top and fleet see them."""
    code, out, err = await cli("top", url_v1, "--once", "--json")
    assert code == 0, err
    top = json.loads(out)
    assert (top["deployment_version"], top["active_sessions"]) == ("v1.0.0", 1)
    assert top["sessions"][0]["tenant"] == "acme"

    code, out, err = await cli("top", url_v2, "--once")
    assert code == 0, err
    assert "v2.0.0" in out and "accepting" in out and "acme" in out

    code, out, err = await cli("fleet", url_v1, url_v2, "--json")
    assert code == 0, err
    fleet = json.loads(out)
    by_version = {w["deployment_version"]: w for w in fleet["workers"]}
    assert by_version["v1.0.0"]["active_sessions"] == 1
    assert by_version["v2.0.0"]["active_sessions"] == 2
    assert set(fleet["versions"]) == {"v1.0.0", "v2.0.0"}


async def test_metrics_jsonl_records_snapshots_and_each_call(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    path = tmp_path / "metrics.jsonl"
    pool = pool_at("v1.0.0", OpsEndpoint(port=None, metrics_jsonl=path, metrics_jsonl_interval=0.1))
    async with running(pool, devserver):
        job = await devserver.dispatch(simulated_call={"turns": ["hi"], "mode": "text"})
        await devserver.wait_job(job.id, {"success"}, timeout=20)
        await wait_until(lambda: pool.runtime_snapshot().outcomes_total.get("success") == 1)
        await asyncio.sleep(0.3)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(x["schema"] == 1 and "ts" in x for x in lines)
    kinds = [x["type"] for x in lines]
    assert kinds.count("snapshot") >= 2
    start = next(x for x in lines if x["type"] == "session_start")
    end = next(x for x in lines if x["type"] == "session_end")
    assert start["job_id"] == end["job_id"] == job.id
    assert (end["status"], end["deployment_version"]) == ("success", "v1.0.0")
