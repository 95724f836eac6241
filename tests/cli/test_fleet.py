"""`openrtc fleet` over real operations endpoints of pools at different versions."""

from __future__ import annotations

import asyncio
import json
import re
import time

from livekit.agents import Agent
from typer.testing import Result

from openrtc.cli.fleet import EXIT_VANISHED, fleet_command
from openrtc.config import PoolConfig, Runtime
from openrtc.deploy.rehearsal.workers import free_port
from openrtc.devserver import DispatchServer
from openrtc.lifecycle import WorkerState
from openrtc.pool import AgentPool
from openrtc.sessions import Outcome, SessionInfo
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.cli.endpoints import free_port_url, invoke, serving
from tests.harness import running


async def fleet(*args: str) -> Result:
    return await invoke(fleet_command, *args, columns=200)


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def make_pool(version: str, calls: int, *, draining: bool = False) -> AgentPool:
    pool = AgentPool(agents={"sales": Sales}, deployment_version=version)
    pool.lifecycle.move(WorkerState.ACCEPTING, reason="test")
    for n in range(calls):
        info = SessionInfo(
            f"{version}-{n}", "sales", f"room-{n}", "acme", version, "", {}, time.time()
        )
        pool.session_started(info, session=None)
    if draining:
        pool.lifecycle.move(WorkerState.DRAINING, reason="test")
    return pool


def end_all(pool: AgentPool) -> None:
    for live in pool.live_sessions():
        pool.session_ended(live.info.job_id, Outcome.SUCCESS, None, "test")


async def test_json_lists_every_worker_and_the_versions() -> None:
    v1 = make_pool("v1.0.0", 1, draining=True)
    v2 = make_pool("v2.0.0", 2)
    async with serving(v1, v2) as (a, b):
        result = await fleet(a.url, b.url, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    workers = [
        (w["url"], w["deployment_version"], w["state"], w["active_sessions"], w["reachable"])
        for w in body["workers"]
    ]
    assert workers == [
        (a.url, "v1.0.0", "draining", 1, True),
        (b.url, "v2.0.0", "accepting", 2, True),
    ]
    assert body["workers"][1]["snapshot"]["sessions_by_agent"] == {"sales": 2}
    assert body["versions"] == {
        "v1.0.0": {"workers": 1, "calls": 1, "states": {"draining": 1}},
        "v2.0.0": {"workers": 1, "calls": 2, "states": {"accepting": 1}},
    }


async def test_table_has_a_distribution_line_and_a_row_for_an_unreachable_worker() -> None:
    pools = [
        make_pool("v1.0.0", 1, draining=True),
        make_pool("v1.0.0", 2),
        make_pool("v2.0.0", 5),
        make_pool("v2.0.0", 0),
    ]
    down = free_port_url()
    async with serving(*pools) as servers:
        result = await fleet(*(s.url for s in servers), down)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == (
        "v1.0.0: 2 workers (1 draining), 3 calls | v2.0.0: 2 workers, 5 calls | unreachable: 1"
    )
    down_row = next(line for line in lines if down in line)
    assert "unreachable" in down_row and "connection refused" in down_row
    assert sum("accepting" in line for line in lines) == 3


async def test_all_unreachable_exits_nonzero() -> None:
    result = await fleet(free_port_url(), free_port_url())
    assert result.exit_code == 2
    assert "none of the 2 workers answered" in result.stderr
    waited = await fleet(free_port_url(), "--wait-drained", "v1.0.0", "--timeout", "1")
    assert waited.exit_code == 2


async def test_wait_drained_returns_once_the_last_call_ends() -> None:
    v1 = make_pool("v1.0.0", 2, draining=True)
    v2 = make_pool("v2.0.0", 3)
    async with serving(v1, v2) as (a, b):

        async def hang_up_later() -> None:
            await asyncio.sleep(0.5)
            end_all(v1)

        ender = asyncio.create_task(hang_up_later())
        result = await fleet(a.url, b.url, "--wait-drained", "v1.0.0", "--interval", "0.1")
        await ender
        assert v2.runtime_snapshot().active_sessions == 3
    assert result.exit_code == 0, result.output
    progress = result.stderr.splitlines()
    assert f"v1.0.0: 2 calls live on 1 worker: {a.url} (2)" in progress[0]
    assert progress[-1].endswith("v1.0.0: no live calls")
    assert len(progress) == 2  # one line per poll that changed something
    assert re.search(
        r"^v1\.0\.0 drained after [\d.]+s: no live calls on 1 worker$", result.stdout, re.M
    )


async def test_wait_drained_times_out_while_a_call_is_live() -> None:
    v1 = make_pool("v1.0.0", 1, draining=True)
    async with serving(v1) as (a,):
        args = ("--wait-drained", "v1.0.0", "--interval", "0.1", "--timeout", "0.5")
        result = await fleet(a.url, *args)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: timed out after 0.5s: v1.0.0 still has 1 call live on {a.url} (1)"
    )


async def test_a_worker_that_vanishes_with_live_calls_is_named_and_exits_3() -> None:
    v1 = make_pool("v1.0.0", 1, draining=True)
    v1b = make_pool("v1.0.0", 0, draining=True)
    async with serving(v1, v1b) as (a, b):

        async def killed_later() -> None:
            await asyncio.sleep(0.5)
            await a.aclose()  # gone, as a SIGKILLed worker is, with its call on the books

        exiting = asyncio.create_task(killed_later())
        result = await fleet(a.url, b.url, "--wait-drained", "v1.0.0", "--interval", "0.1")
        await exiting
    assert result.exit_code == EXIT_VANISHED, result.output
    assert f"{a.url} vanished (connection refused) with 1 live call at last sight" in (
        result.stderr
    )
    assert f"workers vanished with 1 call live at last sight: {a.url} (1)" in result.stderr


async def test_a_lone_worker_that_drains_and_exits_is_drained(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": Sales},
        deployment_version="v1.0.0",
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with running(pool, devserver, http_port=port) as worker:
        job = await devserver.dispatch(
            simulated_call={"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": 1.5}
        )
        await devserver.wait_job(job.id, {"running"}, timeout=20)
        waiting = asyncio.create_task(
            fleet(url, "--wait-drained", "v1.0.0", "--interval", "1.0", "--timeout", "30")
        )
        await asyncio.sleep(0.3)
        pool.begin_drain(reason="deploy", actor="test")
        assert await worker.exit_code(timeout=30) == 0
        result = await waiting
    assert result.exit_code == 0, result.output
    assert re.search(r"^v1\.0\.0 drained after [\d.]+s", result.stdout, re.M)


async def test_wait_drained_notes_a_worker_still_accepting() -> None:
    v1 = make_pool("v1.0.0", 0)
    async with serving(v1) as (a,):
        result = await fleet(a.url, "--wait-drained", "v1.0.0")
    assert result.exit_code == 0, result.output
    assert f"note: {a.url} runs v1.0.0 and still accepts new calls" in result.stdout


def test_a_missed_poll_is_not_a_drain() -> None:
    from openrtc.cli.fleet import GONE_AFTER, DrainWatch, WorkerRow

    url = "http://127.0.0.1:9"
    live = WorkerRow(url, {"deployment_version": "v1", "state": "draining", "active_sessions": 2})
    blip = WorkerRow(url, error="timed out")
    watch = DrainWatch("v1")
    watch.update([live])
    for n in range(1, GONE_AFTER):
        lines = watch.update([blip])
        assert not watch.drained and f"poll {n} of {GONE_AFTER}" in lines[0]
    watch.update([live])  # it answers again: the count starts over
    for _ in range(GONE_AFTER - 1):
        watch.update([blip])
    assert not watch.drained and watch.holding == {url: 2}
    lines = watch.update([blip])
    assert not watch.drained and watch.settled and watch.vanished == {url: 2}
    assert "vanished (timed out) with 2 live calls at last sight" in lines[0]
