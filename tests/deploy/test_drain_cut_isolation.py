"""A drain-timeout cut ends thread- and process-isolated calls CANCELLED, as coroutine ones."""

from __future__ import annotations

import pytest
from livekit.agents import Agent

from openrtc import AgentPool
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.worker.lifespan import EXIT_DRAIN_TIMEOUT
from tests.harness import running, wait_until


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_drain_timeout_cut_is_cancelled_in_every_isolation(
    devserver: DispatchServer, isolation: str
) -> None:
    events: list[dict[str, object]] = []
    pool = AgentPool(
        agents={"sales": Sales},
        isolation=isolation,
        drain_timeout=0.5,
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        audit_sink=lambda e: events.append(e.to_dict()),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    hold = {"turns": ["hello"], "mode": "text", "pause_s": 0.0, "hold_s": 60}
    async with running(pool, devserver) as worker:
        jobs = [await devserver.dispatch(simulated_call=hold) for _ in range(2)]
        await wait_until(lambda: pool.runtime_snapshot().active_sessions == 2, timeout=60)
        pool.begin_drain(reason="deploy", actor="test")
        assert await worker.exit_code(timeout=60) == EXIT_DRAIN_TIMEOUT
        for job in jobs:
            done = await devserver.wait_job(job.id, {"cancelled", "success", "failed"}, timeout=5)
            assert done.state.value == "cancelled"
    assert pool.runtime_snapshot().outcomes_total == {"cancelled": 2}
    cut = [e for e in events if e["event"] == "deployment.drain_timeout"]
    assert sorted(cut[0]["cut_job_ids"]) == sorted(j.id for j in jobs)  # type: ignore[arg-type]
