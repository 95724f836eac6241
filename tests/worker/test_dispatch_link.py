"""The dispatch link, over the wire: lost, retried, restored, given up; named at start."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from openrtc import AgentPool
from openrtc.audit import AuditEvent
from openrtc.config import Dispatch, OpsEndpoint, PoolConfig, Runtime
from openrtc.deploy.rehearsal.workers import free_port
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.worker.lifespan import EXIT_FAILED, EXIT_OK, Lifespan
from openrtc.worker.server import PoolServer
from tests.harness import running, wait_until

from .agents import SalesAgent

FAKES = {"default_stt": FakeSTT(), "default_llm": FakeLLM(), "default_tts": FakeTTS()}


def pool_with(events: list[AuditEvent], budget: float = 130.0) -> AgentPool:
    return AgentPool(
        agents={"sales": SalesAgent},
        audit_sink=events.append,
        **FAKES,
        config=PoolConfig.from_env(
            runtime=Runtime(prewarm_models=False), dispatch=Dispatch(retry_budget=budget)
        ),
    )


def call(hold_s: float) -> dict[str, object]:
    return {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": hold_s}


def names(events: list[AuditEvent]) -> list[str]:
    return [e.event for e in events]


async def readyz(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as resp:
        return resp.status, await resp.json()


async def test_a_call_ending_during_an_outage_is_reported_once_the_server_is_back() -> None:
    events: list[AuditEvent] = []
    pool = pool_with(events)
    port = free_port()
    first = DispatchServer(port=port, api_secret="s" * 32, offer_timeout=2.0)
    await first.start()
    async with running(pool, first, http_port=0) as worker:
        ops = worker.lifespan.ops
        assert ops is not None
        job = await first.dispatch(simulated_call=call(1.5))
        await first.wait_job(job.id, {"running"}, timeout=20)
        await first.aclose()
        lost = time.monotonic()
        await wait_until(lambda: pool.dispatch_down is not None, timeout=5)
        assert time.monotonic() - lost < 1.0
        status, body = await readyz(ops.url)
        assert (status, body["reason"]) == (503, "dispatch_unreachable")
        assert pool.exact_load() == 1.0
        # the call runs to hang-up; its final status waits for the server
        await wait_until(lambda: not pool.live_sessions(), timeout=20)
        assert worker.server.unreported_outcomes() == {job.id: "JS_SUCCESS"}

        second = DispatchServer(port=port, api_secret="s" * 32, offer_timeout=2.0)
        await second.start()
        try:
            await wait_until(lambda: pool.dispatch_down is None, timeout=20)
            assert (await readyz(ops.url))[0] == 200
            assert worker.server.unreported_outcomes() == {}
            await second.wait_for_event("worker_registered", timeout=10)
            again = await second.dispatch(simulated_call=call(0.1))
            done = await second.wait_job(again.id, {"success", "failed"}, timeout=20)
            assert done.state.value == "success"
        finally:
            pool.begin_drain(reason="test over", actor="test")
            assert await worker.exit_code() == EXIT_OK
            await second.aclose()
    seen = names(events)
    assert seen.index("dispatch.link_lost") < seen.index("dispatch.outcome_held")
    assert seen.index("dispatch.outcomes_reported") < seen.index("dispatch.link_restored")
    reported = next(e for e in events if e.event == "dispatch.outcomes_reported")
    assert reported.fields["job_ids"] == [job.id]
    assert "dispatch.outcomes_unreported" not in seen
    assert "dispatch.gave_up" not in seen


async def test_with_no_live_call_the_worker_gives_up_after_the_budget_and_exits_1(
    devserver: DispatchServer,
) -> None:
    events: list[AuditEvent] = []
    pool = pool_with(events, budget=1.0)
    async with running(pool, devserver) as worker:
        await devserver.aclose()
        lost = time.monotonic()
        assert await worker.exit_code(timeout=15) == EXIT_FAILED
        assert 1.0 <= time.monotonic() - lost < 5.0
    gave_up = [e for e in events if e.event == "dispatch.gave_up"]
    assert len(gave_up) == 1 and gave_up[0].fields["retry_budget"] == 1.0


async def test_a_drain_during_an_outage_lets_the_live_call_end_and_exits_0(
    devserver: DispatchServer,
) -> None:
    events: list[AuditEvent] = []
    pool = pool_with(events, budget=0.5)
    async with running(pool, devserver) as worker:
        job = await devserver.dispatch(simulated_call=call(2.5))
        await devserver.wait_job(job.id, {"running"}, timeout=20)
        await devserver.aclose()
        await wait_until(lambda: pool.dispatch_down is not None, timeout=5)
        pool.begin_drain(reason="SIGTERM", actor="signal")
        await asyncio.sleep(1.0)  # past the budget: the live call keeps the worker up
        assert [s.info.job_id for s in pool.live_sessions()] == [job.id]
        assert await worker.exit_code(timeout=20) == EXIT_OK
    assert pool.runtime_snapshot().outcomes_total == {"success": 1}
    unreported = [e for e in events if e.event == "dispatch.outcomes_unreported"]
    assert unreported[0].fields["outcomes"] == {job.id: "JS_SUCCESS"}
    assert "dispatch.gave_up" not in names(events)


async def start_only(pool: AgentPool, ws_url: str, key: str, secret: str) -> Lifespan:
    server = PoolServer(pool, ws_url=ws_url, api_key=key, api_secret=secret)
    return Lifespan(pool, server, ops=OpsEndpoint(port=None))


@pytest.mark.parametrize("case", ["wrong_secret", "unreachable"])
async def test_a_worker_names_what_is_wrong_with_its_connection_within_5s(
    case: str, devserver: DispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openrtc.worker")
    events: list[AuditEvent] = []
    pool = pool_with(events)
    if case == "wrong_secret":
        url, secret = devserver.ws_url, "not-the-secret-" + "x" * 24
    else:
        url, secret = f"ws://127.0.0.1:{free_port()}", devserver.api_secret
    lifespan = await start_only(pool, url, devserver.api_key, secret)
    task = asyncio.create_task(lifespan.run())
    started = time.monotonic()
    try:
        await wait_until(lambda: pool.dispatch_down is not None, timeout=5)
        assert time.monotonic() - started < 5.0
        lines = [r.getMessage() for r in caplog.records if r.name == "openrtc.worker"]
        assert len(lines) == 1, lines
        if case == "wrong_secret":
            assert "HTTP 401" in lines[0] and "LIVEKIT_API_SECRET" in lines[0]
        else:
            assert f"{url}/agent" in lines[0] and "cannot reach" in lines[0]
        await asyncio.sleep(2.0)  # still retrying, and not saying it again
        assert not task.done()
        assert len([r for r in caplog.records if r.name == "openrtc.worker"]) == 1
    finally:
        pool.begin_drain(reason="test over", actor="test")
        await asyncio.wait_for(task, 15)
    lost = [e for e in events if e.event == "dispatch.link_lost"]
    assert len(lost) == 1 and lost[0].fields["registered"] is False
