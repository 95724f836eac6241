"""A call's SystemExit or KeyboardInterrupt ends that call only, over the wire."""

from __future__ import annotations

import asyncio
import sys

import pytest
from livekit.agents import Agent

from openrtc import AgentPool
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


class Exits(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Exits.")

    async def on_enter(self) -> None:
        sys.exit(3)


class Interrupts(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Interrupts.")

    async def on_enter(self) -> None:
        raise KeyboardInterrupt("pressed in agent code")


class ExitsInInit(Agent):
    def __init__(self) -> None:
        raise SystemExit("bye from __init__")


def call(hold_s: float = 0.0) -> dict[str, object]:
    return {"turns": ["hello"], "mode": "text", "pause_s": 0.0, "hold_s": hold_s}


@pytest.mark.parametrize(
    ("agent", "named"),
    [
        ("exits", "SystemExit: 3"),
        ("interrupts", "KeyboardInterrupt: pressed in agent code"),
        ("exits_in_init", "SystemExit: bye from __init__"),
    ],
)
async def test_base_exception_from_agent_code_fails_only_that_call(
    devserver: DispatchServer, agent: str, named: str
) -> None:
    ended: list[tuple[str, str, str | None]] = []
    pool = AgentPool(
        agents={
            "sales": Sales,
            "exits": Exits,
            "interrupts": Interrupts,
            "exits_in_init": ExitsInInit,
        },
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    pool.add_end_listener(
        lambda info, out: ended.append((info.job_id, out.status.value, out.error))
    )
    async with running(pool, devserver) as worker:
        sibling = await devserver.dispatch(metadata={"agent": "sales"}, simulated_call=call(1.5))
        await devserver.wait_job(sibling.id, {"running"}, timeout=20)
        bad = await devserver.dispatch(metadata={"agent": agent}, simulated_call=call())
        bad_done = await devserver.wait_job(bad.id, {"success", "failed", "cancelled"}, timeout=20)
        assert bad_done.state.value == "failed"
        sib_done = await devserver.wait_job(sibling.id, {"success", "failed"}, timeout=20)
        assert sib_done.state.value == "success", sib_done.to_dict()
        assert not worker.task.done(), "the worker kept running"
        after = await devserver.dispatch(metadata={"agent": "sales"}, simulated_call=call())
        after_done = await devserver.wait_job(after.id, {"success", "failed"}, timeout=20)
        assert after_done.state.value == "success"
        await asyncio.sleep(0.1)
    failed = [e for e in ended if e[0] == bad.id]
    assert failed and failed[0][1] == "failed" and named in (failed[0][2] or ""), ended
    assert pool.runtime_snapshot().outcomes_total == {"success": 2, "failed": 1}


async def test_a_call_that_cannot_run_ends_failed_at_the_pool_and_the_server(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": Sales},
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver):
        job = await devserver.dispatch(simulated_call={**call(), "hold_s": float("inf")})
        done = await devserver.wait_job(job.id, {"success", "failed", "cancelled"}, timeout=20)
        assert done.state.value == "failed", done.to_dict()
    assert pool.runtime_snapshot().outcomes_total == {"failed": 1}
