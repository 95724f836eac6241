"""Process isolation as honest as coroutine: the admitted agent runs, a killed job fails."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit.agents import JobRequest

from openrtc import AgentPool, SessionInfo, SessionOutcome
from openrtc.config import Dispatch, PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

from .marking_agents import MarkedSales, MarkedSupport


class Recorder:
    def __init__(self) -> None:
        self.started: list[tuple[str, Any]] = []
        self.ended: list[tuple[str, str, str | None]] = []

    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        self.started.append((info.job_id, session))

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self.ended.append((info.job_id, outcome.status.value, outcome.error))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def marks(path: Path) -> dict[str, tuple[str, int]]:
    if not path.exists():
        return {}
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return {job: (cls, int(pid)) for job, cls, pid in rows}


def always_support(request: JobRequest) -> str:
    return "support"


async def test_router_choice_runs_and_a_sigkilled_job_fails_everywhere(
    devserver: DispatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks_file = tmp_path / "marks.txt"
    rec = Recorder()
    pool = AgentPool(
        isolation="process",
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        observers=[rec],
        config=PoolConfig.from_env(
            runtime=Runtime(prewarm_models=False), dispatch=Dispatch(router=always_support)
        ),
    )
    pool.add("sales", MarkedSales)
    pool.add("support", MarkedSupport)
    port = free_port()
    call = {"turns": ["hello"], "mode": "text", "pause_s": 0.0}
    async with running(pool, devserver, http_port=port):
        routed = await devserver.dispatch(
            metadata={"agent": "sales", "marks": str(marks_file)}, simulated_call=call
        )
        done = await devserver.wait_job(routed.id, {"success", "failed"}, timeout=90)
        assert done.state.value == "success", done.to_dict()
        assert marks(marks_file)[routed.id][0] == "MarkedSupport", "the router's choice ran"

        doomed = await devserver.dispatch(
            metadata={"marks": str(marks_file)}, simulated_call={**call, "hold_s": 60}
        )
        await wait_until(lambda: doomed.id in marks(marks_file), timeout=90)
        pid = marks(marks_file)[doomed.id][1]
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        killed = await devserver.wait_job(doomed.id, {"success", "failed", "cancelled"}, 30)
        assert killed.state.value == "failed"
        await wait_until(lambda: len(rec.ended) == 2, timeout=15)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            metrics = await resp.text()
    assert pool.runtime_snapshot().outcomes_total == {"success": 1, "failed": 1}
    failed_line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("openrtc_sessions_ended") and 'outcome="failed"' in line
    )
    assert failed_line.rstrip().endswith("1.0")
    assert {job for job, _ in rec.started} == {routed.id, doomed.id}
    ended = {job: (status, error) for job, status, error in rec.ended}
    assert ended[routed.id][0] == "success"
    assert ended[doomed.id][0] == "failed" and "SIGKILL" in (ended[doomed.id][1] or "")
