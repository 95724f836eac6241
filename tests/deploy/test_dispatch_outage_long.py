"""The dispatch server killed for good under two live calls (real processes, SIGKILL).

This is the one long test (about 2.5 minutes): the outage must outlast livekit's own
~130 s of retries, after which the stock worker would have cut both calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from openrtc.audit import verify_chain
from openrtc.deploy.rehearsal.workers import free_port
from openrtc.devserver import DevServerClient
from openrtc.worker.lifespan import EXIT_FAILED
from tests.harness import wait_until

AGENT = textwrap.dedent(
    """
    from livekit.agents import Agent
    from openrtc import agent_config
    from openrtc.testing import FakeLLM, FakeSTT, FakeTTS

    @agent_config(name="steady", stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS())
    class Steady(Agent):
        def __init__(self):
            super().__init__(instructions="You are Steady.")
    """
)
OUTAGE_S = 140.0
"""Longer than livekit's 16 retries (~130 s) and than the default retry budget (130 s)."""
HOLD_S = OUTAGE_S + 8.0


async def spawn(*args: str, log: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "openrtc.cli.main", *args, env=env, stdout=out, stderr=out
        )


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


@pytest.mark.timeout(OUTAGE_S + 120)
async def test_a_dispatch_server_killed_for_good_never_cuts_live_calls(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "steady.py").write_text(AGENT)
    secret, dispatch_port, http_port = "outage-secret-" + "x" * 24, free_port(), free_port()
    env = {
        **os.environ,
        "LIVEKIT_URL": f"ws://127.0.0.1:{dispatch_port}",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": secret,
    }
    audit = tmp_path / "audit.jsonl"
    dispatch = await spawn(
        "devserver", "--port", str(dispatch_port), log=tmp_path / "dispatch.log", env=env
    )
    worker = None
    try:
        client = DevServerClient(f"http://127.0.0.1:{dispatch_port}", "devkey", secret)
        await wait_until(lambda: (tmp_path / "dispatch.log").read_text().count("LIVEKIT_URL") > 0)
        worker = await spawn(
            "start",
            str(agents),
            "--http-port",
            str(http_port),
            "--audit-path",
            str(audit),
            log=tmp_path / "worker.log",
            env=env,
        )
        ops = f"http://127.0.0.1:{http_port}"
        async with client, aiohttp.ClientSession() as http:

            async def workers_connected() -> bool:
                return any(w["connected"] for w in await client.workers())

            deadline = time.monotonic() + 60
            while not await workers_connected():
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                await asyncio.sleep(0.2)
            script = {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": HOLD_S}
            jobs = [await client.dispatch(simulated_call=script) for _ in range(2)]
            for j in jobs:
                await client.wait_job(j["id"], {"running"}, timeout=20)
            assert (await get_json(http, f"{ops}/readyz"))[0] == 200

            dispatch.send_signal(signal.SIGKILL)
            await dispatch.wait()
            killed = time.monotonic()
            while True:
                status, body = await get_json(http, f"{ops}/readyz")
                if status == 503:
                    break
                await asyncio.sleep(0.02)
            assert time.monotonic() - killed < 1.0
            assert body["reason"] == "dispatch_unreachable"

            await asyncio.sleep(OUTAGE_S - (time.monotonic() - killed))
            assert worker.returncode is None
            _, snap = await get_json(http, f"{ops}/snapshot")
            assert snap["active_sessions"] == 2, snap
            assert snap["dispatch_reachable"] is False
            assert (await get_json(http, f"{ops}/readyz"))[0] == 503

        # the calls hang up on their own; with none live and the budget spent, the worker
        # exits non-zero so its orchestrator restarts it
        code = await asyncio.wait_for(worker.wait(), HOLD_S - OUTAGE_S + 30)
        assert code == EXIT_FAILED
    finally:
        for proc in (worker, dispatch):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log
    assert log.count("ended success") == 2, log
    assert verify_chain(audit).ok
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    by_event: dict[str, list[dict[str, object]]] = {}
    for r in records:
        by_event.setdefault(str(r["event"]), []).append(r)
    assert len(by_event["dispatch.link_lost"]) == 1
    assert by_event["dispatch.link_lost"][0]["active_sessions"] == 2
    held = {r["job_id"]: r["status"] for r in by_event["dispatch.outcome_held"]}
    assert held == {j["id"]: "JS_SUCCESS" for j in jobs}
    unreported = by_event["dispatch.outcomes_unreported"][0]["outcomes"]
    assert unreported == {j["id"]: "JS_SUCCESS" for j in jobs}
    assert len(by_event["dispatch.gave_up"]) == 1
    assert by_event["worker.stopped"][-1]["active_sessions"] == 0
