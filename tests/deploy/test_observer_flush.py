"""SIGTERM with live calls: an observer whose on_session_end does I/O hears every call.

Real processes: `openrtc start app.py:pool` and `python app.py start` (`pool.run()`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from openrtc.devserver import DispatchServer
from openrtc.worker.lifespan import EXIT_OK
from tests.harness import wait_until

APP = textwrap.dedent(
    """
    import os

    import aiohttp
    from livekit.agents import Agent

    from openrtc import AgentPool
    from openrtc.testing import FakeLLM, FakeSTT, FakeTTS


    class Sales(Agent):
        def __init__(self):
            super().__init__(instructions="You are Sales.")


    class PostsCallRecords:
        async def on_session_start(self, info, session):
            return None

        async def on_session_end(self, info, outcome):
            async with aiohttp.ClientSession() as http:
                body = {"job_id": info.job_id, "status": outcome.status.value}
                async with http.post(os.environ["CALL_RECORDS_URL"], json=body) as resp:
                    resp.raise_for_status()


    pool = AgentPool(
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        observers=[PostsCallRecords()],
    )
    pool.add("sales", Sales)

    if __name__ == "__main__":
        pool.run()
    """
)


class CallRecords:
    """A slow HTTP receiver: each record takes a second to be stored."""

    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(1.0)
        self.records.append(body)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/records", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/records"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def records() -> AsyncIterator[CallRecords]:
    receiver = CallRecords()
    await receiver.start()
    yield receiver
    await receiver.aclose()


@pytest.mark.parametrize("form", ["openrtc start app.py:pool", "python app.py start"])
async def test_sigterm_with_live_calls_every_call_reaches_the_observer_before_exit_0(
    devserver: DispatchServer, records: CallRecords, tmp_path: Path, form: str
) -> None:
    (tmp_path / "app.py").write_text(APP)
    env = {
        **os.environ,
        "LIVEKIT_URL": devserver.ws_url,
        "LIVEKIT_API_KEY": devserver.api_key,
        "LIVEKIT_API_SECRET": devserver.api_secret,
        "CALL_RECORDS_URL": records.url,
        "OPENRTC_PREWARM_MODELS": "false",
        "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
    }
    if form.startswith("openrtc"):
        argv = [sys.executable, "-m", "openrtc.cli.main", "start", "app.py:pool"]
    else:
        argv = [sys.executable, "app.py", "start"]
    log = (tmp_path / "worker.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        *argv, "--deployment-version", "v7", cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    log.close()
    try:
        await wait_until(lambda: any(w.connected for w in devserver.workers()), timeout=60)
        script = {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": 1.5}
        jobs = [await devserver.dispatch(simulated_call=script) for _ in range(3)]
        for job in jobs:
            await devserver.wait_job(job.id, {"running"}, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == EXIT_OK
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    worker_log = (tmp_path / "worker.log").read_text()
    assert sorted(r["job_id"] for r in records.records) == sorted(j.id for j in jobs), worker_log
    assert {r["status"] for r in records.records} == {"success"}
    assert "worker v7 serving sales" in worker_log, "the flag went over the pool's settings"
