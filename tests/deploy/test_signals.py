"""SIGTERM on a real `openrtc start` process: drained, never lost, never raised into a call."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openrtc.devserver import DispatchServer
from openrtc.worker.lifespan import EXIT_DRAIN_TIMEOUT, EXIT_OK
from tests.harness import wait_until

BLOCKING_AGENT = textwrap.dedent(
    """
    import time
    from livekit.agents import Agent
    from openrtc import agent_config
    from openrtc.testing import FakeLLM, FakeSTT, FakeTTS

    @agent_config(name="slow", stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS())
    class Slow(Agent):
        def __init__(self):
            super().__init__(instructions="You are Slow.")

        async def on_enter(self):
            time.sleep(2.0)  # blocks the event loop, as careless agent code does
    """
)


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    d = tmp_path / "agents"
    d.mkdir()
    (d / "slow.py").write_text(BLOCKING_AGENT)
    return d


async def start_worker(
    devserver: DispatchServer, agents_dir: Path, tmp_path: Path, *extra: str
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "LIVEKIT_URL": devserver.ws_url,
        "LIVEKIT_API_KEY": devserver.api_key,
        "LIVEKIT_API_SECRET": devserver.api_secret,
    }
    log = (tmp_path / "worker.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openrtc.cli.main",
        "start",
        str(agents_dir),
        "--deployment-version",
        "v1.0.0",
        "--audit-path",
        str(tmp_path / "audit.jsonl"),
        *extra,
        env=env,
        stdout=log,
        stderr=log,
    )
    log.close()
    await wait_until(lambda: any(w.connected for w in devserver.workers()), timeout=60)
    return proc


def call(hold_s: float) -> dict[str, object]:
    return {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": hold_s}


@pytest.fixture
async def server() -> AsyncIterator[DispatchServer]:
    async with DispatchServer(dispatch_deadline=2.0, offer_timeout=1.0) as s:
        yield s


async def test_sigterm_during_blocking_agent_code_still_drains_and_exits_0(
    server: DispatchServer, agents_dir: Path, tmp_path: Path
) -> None:
    proc = await start_worker(server, agents_dir, tmp_path)
    live = await server.dispatch(simulated_call=call(1.0))
    await server.wait_job(live.id, {"running"}, timeout=20)
    await asyncio.sleep(0.3)  # the agent is inside time.sleep now
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    await wait_until(
        lambda: any(w.status == "WS_FULL" for w in server.workers() if w.connected), timeout=10
    )
    refused = await server.dispatch(simulated_call=call(0.1))
    assert (await server.wait_job(refused.id, {"unserved", "success"}, timeout=10)).state == (
        "unserved"
    )
    assert await asyncio.wait_for(proc.wait(), 30) == EXIT_OK
    done = await server.wait_job(live.id, {"success", "failed", "cancelled"}, timeout=5)
    assert done.state.value == "success"
    assert done.ended_at is not None and done.ended_at > sent
    log = (tmp_path / "worker.log").read_text()
    assert "SIGTERM received: draining" in log
    assert "Traceback" not in log


async def test_second_sigterm_cuts_live_calls_and_exits_3(
    server: DispatchServer, agents_dir: Path, tmp_path: Path
) -> None:
    proc = await start_worker(server, agents_dir, tmp_path)
    live = await server.dispatch(simulated_call=call(60))
    await server.wait_job(live.id, {"running"}, timeout=20)
    await asyncio.sleep(2.5)  # past the blocking on_enter
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert proc.returncode is None
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == EXIT_DRAIN_TIMEOUT
    done = await server.wait_job(live.id, {"success", "failed", "cancelled"}, timeout=5)
    assert done.state.value == "cancelled"
    from openrtc.audit import verify_chain

    report = verify_chain(tmp_path / "audit.jsonl")
    assert report.ok, report.reason
    text = (tmp_path / "audit.jsonl").read_text()
    assert "deployment.drain_timeout" in text and live.id in text
