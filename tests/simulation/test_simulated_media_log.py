"""A call on simulated media says so in the log; a call for a real room does not."""

from __future__ import annotations

import logging

import pytest
from livekit.agents import Agent

from openrtc import AgentPool
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running

SIMULATED = "uses simulated media"


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def lines_about(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if job_id in r.getMessage()]


async def test_only_a_dispatch_with_a_simulated_caller_runs_on_simulated_media(
    devserver: DispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openrtc.call")
    pool = AgentPool(
        agents={"sales": Sales},
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver):
        simulated = await devserver.dispatch(
            simulated_call={"turns": ["hi"], "mode": "text", "pause_s": 0.0}
        )
        done = await devserver.wait_job(simulated.id, {"success", "failed"}, timeout=30)
        assert done.state.value == "success", done.to_dict()
        # no simulated caller: the call joins its room, which the loopback server has not
        in_room = await devserver.dispatch()
        joined = await devserver.wait_job(in_room.id, {"success", "failed"}, timeout=20)
    (line,) = [line for line in lines_about(caplog, simulated.id) if SIMULATED in line]
    assert line.startswith(f"call {simulated.id} {SIMULATED}: the dispatch carries")
    assert line.endswith("a simulated caller (text mode)")
    assert joined.state.value == "failed"
    assert lines_about(caplog, in_room.id), "the failed room call is logged"
    assert not [line for line in lines_about(caplog, in_room.id) if SIMULATED in line]
