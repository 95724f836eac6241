"""Log lines say which version, call, agent and tenant they are about."""

from __future__ import annotations

import json
import logging

import pytest
from livekit.agents import Agent

from openrtc import AgentPool
from openrtc.cli.logs import JsonFormatter, TextFormatter
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.log_context import LogContextFilter, bind, unbind
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")

    async def on_enter(self) -> None:
        logging.getLogger("user.agent").info("sales agent entered")


async def test_call_lines_carry_job_agent_tenant_and_version(
    devserver: DispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(LogContextFilter())
    pool = AgentPool(
        agents={"sales": Sales},
        deployment_version="v7.1.0",
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver):
        job = await devserver.dispatch(
            metadata={"tenant": "acme"}, simulated_call={"turns": ["hi"], "mode": "text"}
        )
        await devserver.wait_job(job.id, {"success"}, timeout=20)
        pool.begin_drain(reason="test")
    entered = [r for r in caplog.records if r.getMessage() == "sales agent entered"]
    assert len(entered) == 1
    record = entered[0]
    assert (record.job_id, record.agent, record.tenant) == (job.id, "sales", "acme")  # type: ignore[attr-defined]
    assert record.deployment_version == "v7.1.0"  # type: ignore[attr-defined]
    drain = [
        r for r in caplog.records if "draining" in r.getMessage() and r.name == "openrtc.lifecycle"
    ]
    assert drain and all(r.deployment_version == "v7.1.0" for r in drain)  # type: ignore[attr-defined]
    assert all(not hasattr(r, "job_id") for r in drain)


def test_text_and_json_lines_show_the_fields() -> None:
    token = bind(deployment_version="v2", job_id="AJ_1", agent="sales", tenant="acme")
    try:
        record = logging.LogRecord("openrtc.call", logging.INFO, __file__, 1, "hello", None, None)
        LogContextFilter().filter(record)
    finally:
        unbind(token)
    assert TextFormatter().format(record).endswith("hello [v2 job_id=AJ_1 agent=sales tenant=acme]")
    out = json.loads(JsonFormatter().format(record))
    assert (out["deployment_version"], out["job_id"], out["tenant"]) == ("v2", "AJ_1", "acme")
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "bare", None, None)
    LogContextFilter().filter(plain)
    assert TextFormatter().format(plain).endswith("x: bare")


def test_an_explicit_extra_wins() -> None:
    token = bind(agent="sales")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.agent = "support"
        LogContextFilter().filter(record)
    finally:
        unbind(token)
    assert record.agent == "support"
