"""Pool options that change which calls a worker takes and who hears about them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.agents import JobRequest

from openrtc import AgentPool, SessionInfo, SessionOutcome
from openrtc.config import Dispatch, PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

from .agents import CrashingAgent, SalesAgent, SupportAgent

FAKES: dict[str, Any] = {
    "default_stt": FakeSTT(),
    "default_llm": FakeLLM(),
    "default_tts": FakeTTS(),
}
NO_PREWARM = Runtime(prewarm_models=False)
CALL = {"turns": ["hello"], "mode": "text", "pause_s": 0.0}


class Recorder:
    def __init__(self) -> None:
        self.started: list[SessionInfo] = []
        self.ended: list[tuple[SessionInfo, SessionOutcome]] = []

    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        assert session is not None
        self.started.append(info)

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self.ended.append((info, outcome))


class Broken:
    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        raise RuntimeError("observer bug")

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        await asyncio.sleep(60)


async def test_observers_see_every_call_and_a_broken_one_is_skipped(
    devserver: DispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    pool = AgentPool(
        agents={"sales": SalesAgent, "broken": CrashingAgent},
        observers=[Broken(), rec],
        deployment_version="v3.1.0",
        **FAKES,
        config=PoolConfig.from_env(runtime=NO_PREWARM),
    )
    async with running(pool, devserver):
        ok = await devserver.dispatch(
            metadata={"agent": "sales", "tenant": "acme"}, simulated_call=CALL
        )
        bad = await devserver.dispatch(metadata={"agent": "broken"}, simulated_call=CALL)
        for job in (ok, bad):
            await devserver.wait_job(job.id, {"success", "failed"}, timeout=20)
        await wait_until(lambda: len(rec.ended) == 2, timeout=15)
    started = {i.job_id: i for i in rec.started}
    assert started[ok.id].agent == "sales" and started[ok.id].tenant == "acme"
    assert started[ok.id].deployment_version == "v3.1.0"
    outcomes = {i.job_id: o for i, o in rec.ended}
    assert outcomes[ok.id].status.value == "success"
    assert outcomes[bad.id].status.value == "failed"
    assert "agent bug" in (outcomes[bad.id].error or "")
    assert "observer bug" in caplog.text


async def test_request_fnc_decides_and_its_rejections_are_counted(
    devserver: DispatchServer,
) -> None:
    async def only_vip(req: JobRequest) -> None:
        if req.room.name.startswith("vip-"):
            await req.accept()
        else:
            await req.reject(terminate=False)

    pool = AgentPool(
        agents={"sales": SalesAgent},
        **FAKES,
        config=PoolConfig.from_env(runtime=NO_PREWARM, dispatch=Dispatch(request_fnc=only_vip)),
    )
    async with running(pool, devserver):
        vip = await devserver.dispatch(room="vip-1", simulated_call=CALL)
        other = await devserver.dispatch(room="lobby-1", simulated_call=CALL, deadline=1.0)
        assert (
            await devserver.wait_job(vip.id, {"success", "failed"}, timeout=20)
        ).state == "success"
        assert (await devserver.wait_job(other.id, {"unserved", "success"}, timeout=10)).state == (
            "unserved"
        )
    snap = pool.runtime_snapshot()
    assert snap.accepted_total == 1 and snap.rejected_total["request_fnc"] >= 1
    assert pool.admitted == 0


async def test_accept_only_registered_rooms_drops_the_fallback(devserver: DispatchServer) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent, "support": SupportAgent},
        **FAKES,
        config=PoolConfig.from_env(
            runtime=NO_PREWARM, dispatch=Dispatch(accept_only_registered_rooms=True)
        ),
    )
    async with running(pool, devserver):
        named = await devserver.dispatch(room="support-9", simulated_call=CALL)
        anonymous = await devserver.dispatch(room="lobby", simulated_call=CALL, deadline=1.0)
        done = await devserver.wait_job(named.id, {"success", "failed"}, timeout=20)
        assert done.state == "success"
        assert (
            await devserver.wait_job(anonymous.id, {"unserved"}, timeout=10)
        ).state == "unserved"
    assert "You are Support" in pool.transcripts[named.id].replies[0]
    assert pool.runtime_snapshot().rejected_total["unregistered_room"] >= 1


async def test_agent_name_registers_for_explicit_dispatch(devserver: DispatchServer) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent},
        **FAKES,
        config=PoolConfig.from_env(runtime=NO_PREWARM, dispatch=Dispatch(agent_name="front-desk")),
    )
    async with running(pool, devserver):
        assert devserver.worker(pool.worker_id).agent_name == "front-desk"
        explicit = await devserver.dispatch(agent_name="front-desk", simulated_call=CALL)
        automatic = await devserver.dispatch(simulated_call=CALL, deadline=1.0)
        assert (await devserver.wait_job(explicit.id, {"success"}, timeout=20)).state == "success"
        assert (await devserver.wait_job(automatic.id, {"unserved"}, timeout=10)).state == (
            "unserved"
        )


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_livekit_executors_serve_the_pool_with_honest_outcomes(
    devserver: DispatchServer, isolation: str
) -> None:
    pool = AgentPool(
        isolation=isolation, config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False))
    )  # type: ignore[arg-type]
    pool.discover("examples/agents")
    async with running(pool, devserver):
        ok = await devserver.dispatch(metadata={"agent": "sales"}, simulated_call=CALL)
        bad = await devserver.dispatch(
            metadata={"agent": "support"},
            simulated_call={"turns": ["[fail] please"], "mode": "text", "pause_s": 0.0},
        )
        done_ok = await devserver.wait_job(ok.id, {"success", "failed"}, timeout=60)
        done_bad = await devserver.wait_job(bad.id, {"success", "failed"}, timeout=60)
    assert done_ok.state == "success"
    assert done_bad.state == "failed"
    assert pool.runtime_snapshot().outcomes_total == {"success": 1, "failed": 1}
