"""One call's provider errors stay in that call, even when the provider object is shared."""

from __future__ import annotations

import asyncio

from openrtc import AgentPool
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

from .agents import SalesAgent


async def test_failing_calls_do_not_close_a_healthy_call_sharing_their_llm(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent},
        default_llm=FakeLLM(),
        default_stt=FakeSTT(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    healthy_script = {"turns": ["one", "two", "three", "four"], "mode": "text", "pause_s": 0.4}
    failing_script = {"turns": ["[fail] now"], "mode": "text", "pause_s": 0.0}
    async with running(pool, devserver):
        healthy = await devserver.dispatch(simulated_call=healthy_script)
        await wait_until(lambda: pool.runtime_snapshot().active_sessions == 1)
        failing = await asyncio.gather(
            *(devserver.dispatch(simulated_call=failing_script) for _ in range(6))
        )
        for job in failing:
            done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=20)
            assert done.state == "failed"
        done = await devserver.wait_job(healthy.id, {"success", "failed"}, timeout=30)
    assert done.state == "success", done.error
    assert len(pool.transcripts[healthy.id].replies) == 4
