"""Drain, as an operator drives it: live calls finish, new calls go elsewhere."""

from __future__ import annotations

import asyncio

from livekit.agents import Agent, get_job_context

from openrtc import AgentPool
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.worker.lifespan import EXIT_DRAIN_TIMEOUT, EXIT_OK
from tests.harness import running, wait_until

FAKES = {"default_stt": FakeSTT(), "default_llm": FakeLLM(), "default_tts": FakeTTS()}
SHUTDOWN_CALLBACKS: list[str] = []


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")

    async def on_enter(self) -> None:
        ctx = get_job_context()

        async def record(reason: str) -> None:
            SHUTDOWN_CALLBACKS.append(f"{ctx.job.id}:{reason}")

        ctx.add_shutdown_callback(record)


def long_call(hold_s: float) -> dict[str, object]:
    return {"turns": ["hello"], "mode": "text", "pause_s": 0.0, "hold_s": hold_s}


def pool_at(version: str, **kw: object) -> AgentPool:
    return AgentPool(
        agents={"sales": Sales},
        deployment_version=version,
        **FAKES,
        **kw,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )


async def test_drain_lets_live_calls_finish_and_sends_new_calls_to_the_new_version(
    devserver: DispatchServer,
) -> None:
    events: list[dict[str, object]] = []
    old = pool_at("v1.0.0", audit_sink=lambda e: events.append(e.to_dict()))
    new = pool_at("v2.0.0")
    async with running(old, devserver) as blue:
        live = [await devserver.dispatch(simulated_call=long_call(2.0)) for _ in range(3)]
        await wait_until(lambda: old.runtime_snapshot().active_sessions == 3)
        async with running(new, devserver):
            old.begin_drain(reason="deploy v2", actor="test")
            old.begin_drain(reason="again", actor="test")  # idempotent
            assert old.runtime_snapshot().draining, "refusing from the moment it returns"
            await wait_until(lambda: old.state.value == "draining", timeout=1)
            snap = old.runtime_snapshot()
            assert (snap.state, snap.draining, snap.active_sessions) == ("draining", True, 3)
            await wait_until(lambda: devserver.worker(old.worker_id).status == "WS_FULL", timeout=2)
            fresh = [await devserver.dispatch(simulated_call=long_call(0.2)) for _ in range(4)]
            for job in fresh:
                done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=20)
                assert done.worker_id == new.worker_id
            for job in live:
                done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=20)
                assert (done.state.value, done.worker_id) == ("success", old.worker_id)
            assert await blue.exit_code() == EXIT_OK
    assert old.state.value == "stopped"
    kinds = [e["event"] for e in events]
    assert kinds.count("deployment.drain_started") == 1
    assert "deployment.drain_completed" in kinds
    # the server saw the old worker full before the fresh calls: none was offered to it
    assert not [e for e in events if e["event"] == "worker.rejected"]
    assert all(o.worker_id == new.worker_id for j in fresh for o in devserver.job(j.id).offers)
    assert all(e["version"] == "v1.0.0" for e in events)
    assert not devserver.worker(old.worker_id).connected


async def test_offers_that_reach_a_draining_worker_are_refused_and_audited(
    devserver: DispatchServer,
) -> None:
    events: list[dict[str, object]] = []
    pool = pool_at("v1.0.0", audit_sink=lambda e: events.append(e.to_dict()))
    async with running(pool, devserver) as worker:
        live = await devserver.dispatch(simulated_call=long_call(60))
        await devserver.wait_job(live.id, {"running"})
        # three offers already on the wire when the drain begins, as when SIGTERM lands
        # mid-dispatch: the server still saw the worker available when it sent them
        late = [await devserver.dispatch(simulated_call=long_call(0), deadline=1.0) for _ in "abc"]
        pool.begin_drain(reason="deploy", actor="test")
        for job in late:
            done = await devserver.wait_job(job.id, {"unserved", "success", "failed"})
            assert done.state.value == "unserved"
            assert [(o.worker_id, o.available) for o in done.offers] == [(pool.worker_id, False)]
        assert pool.runtime_snapshot().active_sessions == 1
        await devserver.end_call(live.id)
        assert (await devserver.wait_job(live.id, {"success", "failed"})).state.value == "success"
        assert await worker.exit_code() == EXIT_OK
    refusals = [e for e in events if e["event"] == "worker.rejected"]
    assert sorted(str(e["job_id"]) for e in refusals) == sorted(j.id for j in late)
    assert all((e["reason"], e["result"]) == ("draining", "refused") for e in refusals)
    assert pool.runtime_snapshot().rejected_total == {"draining": 3}


async def test_drain_timeout_cuts_live_calls_gracefully_and_exits_3(
    devserver: DispatchServer,
) -> None:
    events: list[dict[str, object]] = []
    pool = pool_at("v1.0.0", drain_timeout=0.5, audit_sink=lambda e: events.append(e.to_dict()))
    async with running(pool, devserver) as worker:
        jobs = [await devserver.dispatch(simulated_call=long_call(60)) for _ in range(2)]
        await wait_until(lambda: pool.runtime_snapshot().active_sessions == 2)
        pool.begin_drain(reason="deploy", actor="test")
        assert await worker.exit_code() == EXIT_DRAIN_TIMEOUT
        for job in jobs:
            done = await devserver.wait_job(job.id, {"cancelled", "success", "failed"}, timeout=5)
            assert done.state.value == "cancelled"
    cut = [e for e in events if e["event"] == "deployment.drain_timeout"]
    assert len(cut) == 1
    assert sorted(cut[0]["cut_job_ids"]) == sorted(j.id for j in jobs)  # type: ignore[arg-type]
    for job in jobs:
        assert any(c.startswith(job.id) for c in SHUTDOWN_CALLBACKS)
    assert pool.runtime_snapshot().outcomes_total == {"cancelled": 2}


async def test_a_second_request_cuts_at_once(devserver: DispatchServer) -> None:
    pool = pool_at("v1.0.0")
    async with running(pool, devserver) as worker:
        job = await devserver.dispatch(simulated_call=long_call(60))
        await wait_until(lambda: pool.runtime_snapshot().active_sessions == 1)
        pool.begin_drain(reason="first", actor="test")
        await asyncio.sleep(0.3)
        assert not worker.task.done()
        worker.lifespan.force()
        assert await worker.exit_code(timeout=10) == EXIT_DRAIN_TIMEOUT
        done = await devserver.wait_job(job.id, {"cancelled"}, timeout=5)
        assert done.state.value == "cancelled"
