"""Self-protection: memory and failure runs drain the worker without cutting a call, and
a call that blocks the event loop is named."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psutil
import pytest

from openrtc import AgentPool, ConfigError
from openrtc.config import PoolConfig, Runtime
from openrtc.config import SelfProtection as ConfiguredProtection
from openrtc.devserver import DispatchServer
from openrtc.ops.self_protection import MemoryGuard, MemoryReading, SelfProtection, read_memory
from openrtc.worker.lifespan import EXIT_OK
from tests.harness import running, wait_until

from .agents import Blocker, Broken, TenantAgent, call, fakes

ENDED = {"success", "failed", "unserved", "cancelled"}


def pool_with(audit_sink: Any = None, **protection: Any) -> AgentPool:
    return AgentPool(
        agents={"t": TenantAgent, "broken": Broken, "blocker": Blocker},
        **fakes(),
        audit_sink=audit_sink,
        config=PoolConfig.from_env(
            runtime=Runtime(prewarm_models=False),
            protection=ConfiguredProtection(**protection),
        ),
    )


def test_memory_warns_once_per_crossing_and_says_what_it_measures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="openrtc.self_protection")
    pool = pool_with(memory_warn_mb=100)
    readings = iter([50.0, 120.0, 130.0, 90.0, 140.0])
    guard = MemoryGuard(pool, reader=lambda: MemoryReading(None, next(readings)))
    for _ in range(5):
        guard.check()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "worker memory RSS 120 MB is above memory_warn_mb 100 MB",
        "worker memory RSS 140 MB is above memory_warn_mb 100 MB",
    ]
    assert "measured as RSS because USS is unavailable here" in caplog.text
    assert pool.state.value == "starting"
    real = read_memory(psutil.Process())
    assert real.uss_mb is not None and 0 < real.uss_mb <= real.rss_mb


def test_self_protection_options_are_checked() -> None:
    for option, value in (
        ("memory_limit_mb", 0),
        ("consecutive_failure_limit", 1.5),
        ("slow_call_threshold_ms", -5),
    ):
        with pytest.raises(ConfigError, match=option):
            SelfProtection(pool_with(**{option: value}))
    assert not SelfProtection.wanted(pool_with())


async def test_the_memory_limit_drains_the_worker_and_live_calls_still_finish(
    devserver: DispatchServer,
) -> None:
    events: list[dict[str, Any]] = []
    pool = pool_with(memory_limit_mb=1_000_000, audit_sink=lambda e: events.append(e.to_dict()))
    async with running(pool, devserver) as worker:
        protection = worker.lifespan.protection
        assert protection is not None
        jobs = [await devserver.dispatch(simulated_call=call(hold_s=2.0)) for _ in range(3)]
        await wait_until(lambda: pool.runtime_snapshot().active_sessions == 3)
        reading = protection.memory
        assert reading is not None and reading["uss_mb"] is not None
        pool.config = pool.config.replace("protection", memory_limit_mb=reading["uss_mb"] / 2)
        await wait_until(lambda: pool.state.value == "draining", timeout=3)
        assert pool.runtime_snapshot().active_sessions == 3
        done = await asyncio.gather(*(devserver.wait_job(j.id, ENDED, 15) for j in jobs))
        assert await worker.exit_code() == EXIT_OK
    assert [d.state.value for d in done] == ["success"] * 3
    drains = [e for e in events if e["event"] == "deployment.drain_started"]
    assert [(e["reason"], e["actor"]) for e in drains] == [("memory_limit", "self_protection")]


async def test_a_run_of_failed_calls_drains_the_worker_and_a_success_resets_it(
    devserver: DispatchServer,
) -> None:
    pool = pool_with(consecutive_failure_limit=3)
    async with running(pool, devserver) as worker:
        live = await devserver.dispatch(simulated_call=call(hold_s=2.5))

        async def one(agent: str) -> str:
            job = await devserver.dispatch(metadata={"agent": agent}, simulated_call=call())
            return (await devserver.wait_job(job.id, ENDED, 15)).state.value

        assert [await one(a) for a in ("broken", "broken", "t", "broken", "broken")] == [
            "failed",
            "failed",
            "success",
            "failed",
            "failed",
        ]
        assert pool.state.value == "accepting"
        assert await one("broken") == "failed"
        await wait_until(lambda: pool.state.value == "draining", timeout=2)
        assert pool.runtime_snapshot().active_sessions == 1
        assert (await devserver.wait_job(live.id, ENDED, 15)).state.value == "success"
        assert await worker.exit_code() == EXIT_OK
    drains = [t for t in pool.lifecycle.history if t.state.value == "draining"]
    assert [(t.reason, t.actor) for t in drains] == [("consecutive_failures", "self_protection")]


async def test_a_call_that_blocks_the_loop_is_named_with_its_job_and_line(
    devserver: DispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openrtc.self_protection")
    pool = pool_with(slow_call_threshold_ms=250)
    loop = asyncio.get_running_loop()
    async with running(pool, devserver) as worker:
        protection = worker.lifespan.protection
        assert protection is not None and protection.slow_calls is not None
        innocent = await devserver.dispatch(simulated_call=call(hold_s=1.5))
        await wait_until(lambda: pool.runtime_snapshot().active_sessions == 1)
        blocker = await devserver.dispatch(metadata={"agent": "blocker"}, simulated_call=call())
        for job in (blocker, innocent):
            assert (await devserver.wait_job(job.id, ENDED, 15)).state.value == "success"
        reports = list(protection.slow_calls.reports)
    assert loop.get_task_factory() is None
    blamed = [r for r in reports if r.job_id == blocker.id]
    assert len(blamed) == 1
    report = blamed[0]
    assert report.agent == "blocker"
    assert report.location.endswith("in on_enter")
    assert "tests/tenancy/agents.py:" in report.location
    assert report.blocked_ms >= 250
    assert all(r.job_id != innocent.id for r in reports)
    assert f"by call {blocker.id} (agent blocker) at tests/tenancy/agents.py:" in caplog.text
