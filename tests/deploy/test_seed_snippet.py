"""The calls of the zero-downtime deployment guide run exactly as written there."""

from __future__ import annotations

import inspect

from livekit.agents import Agent

from openrtc import AgentPool
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def test_the_pool_takes_at_most_fifteen_parameters() -> None:
    assert len(inspect.signature(AgentPool).parameters) <= 15


async def test_the_guides_primitives_as_written(devserver: DispatchServer) -> None:
    events: list[str] = []
    pool = AgentPool(deployment_version="v2.0.0")
    assert pool.runtime_snapshot().deployment_version == "v2.0.0"
    assert pool.runtime_snapshot().draining is False

    pool = AgentPool(
        agents={"sales": Sales},
        deployment_version="v2.0.0",
        drain_timeout=30,
        audit_sink=lambda event: events.append(event.event),
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        isolation="coroutine",
        max_concurrent_sessions=4,
    )
    async with running(pool, devserver) as worker:
        call = await devserver.dispatch(
            simulated_call={"turns": ["hello"], "mode": "text", "hold_s": 1.0}
        )
        await wait_until(lambda: pool.runtime_snapshot().active_sessions == 1)
        pool.begin_drain()  # reject new jobs; in-flight calls run to hangup
        snapshot = pool.runtime_snapshot()
        assert (snapshot.deployment_version, snapshot.draining) == ("v2.0.0", True)
        refused = await devserver.dispatch(simulated_call={"turns": ["hi"], "mode": "text"})
        assert (await devserver.wait_job(refused.id, {"unserved"}, timeout=15)).state.value
        ended = await devserver.wait_job(call.id, {"success", "failed", "cancelled"}, timeout=30)
        assert ended.state.value == "success"
        assert await worker.exit_code() == 0
    pool.audit_log.flush()
    assert "deployment.drain_started" in events and "deployment.drain_completed" in events
