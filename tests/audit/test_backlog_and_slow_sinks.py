"""A collector that hangs: the loop and calls never wait for it, failures are counted by
sink and reason, and a full spool refuses new calls (audit_backlog) instead of dropping
records, until the collector catches up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from livekit.agents import Agent

from openrtc import AgentPool
from openrtc.config import AuditSettings, PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

from .receiver import Receiver


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def quick_call() -> dict[str, object]:
    return {"turns": ["hello"], "mode": "text", "pause_s": 0.0, "hold_s": 0.0}


class HangingReceiver(Receiver):
    """Holds every request until `release` is set, then answers like a collector."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if not self.release.is_set():
            await request.read()
            await self.release.wait()
            return web.Response(status=503)
        return await super().handle(request)


@pytest.mark.serial
async def test_a_hanging_collector_never_blocks_and_a_full_spool_refuses_calls(
    tmp_path: Path, devserver: DispatchServer
) -> None:
    receiver = HangingReceiver("h4ng-" + os.urandom(8).hex())
    await receiver.start()
    token = tmp_path / "token"
    token.write_text(receiver.token)
    audit = AuditSettings(
        url=receiver.url,
        token_file=token,
        spool_dir=tmp_path / "spool",
        spool_max_mb=4096 / 2**20,
        sink_timeout=0.3,
        retry_max=0.3,
        flush_timeout=10,
    )
    pool = AgentPool(
        agents={"sales": Sales},
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False), audit=audit),
    )
    try:
        async with running(pool, devserver) as worker:
            await wait_until(lambda: pool.state.value == "accepting")
            slowest = 0.0
            for i in range(6):
                started = time.perf_counter()
                pool.audit_log.emit("test.filler", index=i, padding="x" * 200)
                slowest = max(slowest, time.perf_counter() - started)
            assert slowest < 0.05  # the collector hangs; the emitting loop does not
            await wait_until(lambda: pool.audit_log.failures[("http", "timeout")] >= 1)
            assert pool.audit_sinks is not None and pool.audit_sinks.backlog() is not None
            assert pool.audit_log.failures[("http", "spool_full")] == 0  # full, nothing dropped

            refused = await devserver.dispatch(simulated_call=quick_call(), deadline=1.0)
            done = await devserver.wait_job(refused.id, {"unserved", "success", "failed"})
            assert done.state.value == "unserved"
            assert pool.runtime_snapshot().rejected_total.get("audit_backlog", 0) >= 1

            receiver.release.set()  # the collector catches up: the spool drains, calls resume
            await wait_until(lambda: pool.audit_sinks.backlog() is None, timeout=20)  # type: ignore[union-attr]
            taken = await devserver.dispatch(simulated_call=quick_call(), deadline=5.0)
            done = await devserver.wait_job(taken.id, {"unserved", "success", "failed"})
            assert done.state.value == "success"
            pool.begin_drain(reason="test", actor="test")
            assert await worker.exit_code() == 0
    finally:
        await receiver.stop()
    events = [r["event"] for w in receiver.workers() for r in receiver.records(w)]
    assert events.count("test.filler") == 6
    assert {"audit.sink_failed", "audit.spool_full", "audit.sink_recovered"} <= set(events)
    assert "worker.rejected" in events and events[-1] in ("worker.stopped", "audit.spool_drained")
    assert receiver.conflicts == []


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "start", "examples/agents", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_an_audit_url_without_a_spool_is_one_line_exit_2() -> None:
    proc = start("--audit-url", "http://127.0.0.1:9/audit")
    assert proc.returncode == 2
    assert "--audit-spool-dir" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unreadable_token_file_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = start(
        "--audit-url",
        "http://127.0.0.1:9/audit",
        "--audit-spool-dir",
        str(tmp_path / "spool"),
        "--audit-token-file",
        str(tmp_path / "missing"),
    )
    assert proc.returncode == 2
    assert "--audit-token-file" in proc.stderr and "Traceback" not in proc.stderr
