"""The worker's promises, over the wire: a real AgentServer against the dispatch server."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from livekit.local_inference import init_eot
from livekit.plugins import silero

from openrtc import AgentPool
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.worker import models
from tests.harness import running, wait_until

from .agents import BillingAgent, BookingAgent, CrashingAgent, SalesAgent, SupportAgent

FAKES = {"default_stt": FakeSTT(), "default_llm": FakeLLM(), "default_tts": FakeTTS()}


def call(turns: tuple[str, ...] = ("hello",), hold_s: float = 0.0) -> dict[str, object]:
    return {"turns": list(turns), "mode": "text", "pause_s": 0.0, "hold_s": hold_s}


def replies(pool: AgentPool, job_id: str) -> list[str]:
    return [str(r) for r in pool.transcripts[job_id].replies]


async def test_three_agents_are_routed_by_job_metadata_room_metadata_and_room_prefix(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent, "support": SupportAgent, "booking": BookingAgent},
        **FAKES,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver):
        by_job_meta = await devserver.dispatch(
            metadata={"agent": "support"}, simulated_call=call(("my router is down",))
        )
        by_room_meta = await devserver.dispatch(
            room_metadata=json.dumps({"agent": "booking"}), simulated_call=call(("a table",))
        )
        by_prefix = await devserver.dispatch(room="sales-42", simulated_call=call(("prices",)))
        for job in (by_job_meta, by_room_meta, by_prefix):
            done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=20)
            assert done.state.value == "success", done.to_dict()
    assert "You are Support" in replies(pool, by_job_meta.id)[0]
    assert "my router is down" in replies(pool, by_job_meta.id)[0]
    assert "You are Booking" in replies(pool, by_room_meta.id)[0]
    assert "You are Sales" in replies(pool, by_prefix.id)[0]
    assert pool.runtime_snapshot().outcomes_total == {"success": 3}


async def test_a_job_naming_an_unknown_agent_is_refused_and_taken_elsewhere(
    devserver: DispatchServer,
) -> None:
    front = AgentPool(
        agents={"sales": SalesAgent},
        **FAKES,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    billing = AgentPool(
        agents={"billing": BillingAgent},
        **FAKES,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(front, devserver), running(billing, devserver):
        job = await devserver.dispatch(metadata={"agent": "billing"}, simulated_call=call())
        done = await devserver.wait_job(job.id, {"success", "failed", "unserved"}, timeout=20)
        assert done.state.value == "success"
        assert done.worker_id == billing.worker_id
    # the front worker was offered it (lowest load first) or not; if it was, it refused it
    offered_front = [o for o in done.offers if o.worker_id == front.worker_id]
    assert all(o.available is False for o in offered_front)
    assert "You are Billing" in replies(billing, job.id)[0]
    if offered_front:
        assert front.runtime_snapshot().rejected_total == {"unknown_agent": 1}


async def test_an_unknown_agent_alone_is_never_accepted(devserver: DispatchServer) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent},
        **FAKES,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver):
        job = await devserver.dispatch(
            metadata={"agent": "nobody"}, simulated_call=call(), deadline=1.0
        )
        done = await devserver.wait_job(job.id, {"unserved", "success", "failed"}, timeout=10)
    assert done.state.value == "unserved"
    assert pool.runtime_snapshot().accepted_total == 0
    assert pool.runtime_snapshot().rejected_total["unknown_agent"] >= 1


async def test_fifty_concurrent_calls_share_one_loaded_vad_and_turn_model(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(agents={"sales": SalesAgent}, **FAKES)
    async with running(pool, devserver):
        jobs = await asyncio.gather(
            *(devserver.dispatch(simulated_call=call(("hi",), hold_s=1.0)) for _ in range(50))
        )
        await wait_until(
            lambda: sum(s.session is not None for s in pool.live_sessions()) == 50, timeout=30
        )
        sessions = [s.session for s in pool.live_sessions()]
        done = await asyncio.gather(
            *(devserver.wait_job(j.id, {"success", "failed"}, timeout=60) for j in jobs)
        )
    assert [d.state.value for d in done] == ["success"] * 50
    shared = models.shared_turn_detector()
    batched = models.shared_vad()
    # every call's VAD is a view on one batched engine over the one loaded Silero model
    assert all(s.vad._engine is batched._engine for s in sessions)
    assert all(s.turn_detection is shared for s in sessions)


async def test_a_burst_of_twenty_offers_against_a_cap_of_five_admits_exactly_five(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent},
        max_concurrent_sessions=5,
        **FAKES,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver):
        jobs = await asyncio.gather(
            *(devserver.dispatch(simulated_call=call(hold_s=2.0), deadline=1.0) for _ in range(20))
        )
        done = await asyncio.gather(
            *(devserver.wait_job(j.id, {"success", "failed", "unserved"}, timeout=30) for j in jobs)
        )
    states = sorted(d.state.value for d in done)
    assert states.count("success") == 5
    assert states.count("unserved") == 15
    snap = pool.runtime_snapshot()
    assert snap.accepted_total == 5
    assert snap.rejected_total["at_capacity"] >= 15


async def test_a_crashing_call_ends_failed_and_its_siblings_succeed(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent, "broken": CrashingAgent},
        **FAKES,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver):
        siblings = [
            await devserver.dispatch(simulated_call=call(("one", "two"), hold_s=0.5))
            for _ in range(3)
        ]
        broken = await devserver.dispatch(metadata={"agent": "broken"}, simulated_call=call())
        crashed = await devserver.wait_job(broken.id, {"success", "failed"}, timeout=20)
        finished = [
            await devserver.wait_job(s.id, {"success", "failed"}, timeout=20) for s in siblings
        ]
    assert crashed.state.value == "failed"
    assert "agent bug" in (crashed.error or "")
    assert [f.state.value for f in finished] == ["success"] * 3
    assert pool.runtime_snapshot().outcomes_total == {"success": 3, "failed": 1}


def count_model_loads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count real loads of Silero VAD and of the end-of-turn model from now on."""
    loads: Counter[str] = Counter()
    load_vad = silero.VAD.load

    def counted_load_vad(*args: Any, **kwargs: Any) -> Any:
        loads["vad"] += 1
        return load_vad(*args, **kwargs)

    def counted_init_eot(*args: Any, **kwargs: Any) -> Any:
        loads["eot"] += 1
        return init_eot(*args, **kwargs)

    monkeypatch.setattr(silero.VAD, "load", staticmethod(counted_load_vad))
    monkeypatch.setattr(models, "init_eot", counted_init_eot)
    models.forget_loaded_models()
    return loads


async def test_calls_to_every_agent_share_models_loaded_once_in_the_process(
    devserver: DispatchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = count_model_loads(monkeypatch)
    pool = AgentPool(
        agents={"sales": SalesAgent, "support": SupportAgent, "booking": BookingAgent}, **FAKES
    )
    async with running(pool, devserver):
        assert loads == {"vad": 1, "eot": 1}, "prewarm loads both models before any call"
        jobs = await asyncio.gather(
            *(
                devserver.dispatch(metadata={"agent": agent}, simulated_call=call(hold_s=2.0))
                for agent in ("sales", "support", "booking") * 2
            )
        )
        await wait_until(lambda: sum(s.session is not None for s in pool.live_sessions()) == 6)
        sessions = [s.session for s in pool.live_sessions()]
        done = await asyncio.gather(
            *(devserver.wait_job(j.id, {"success", "failed"}, timeout=30) for j in jobs)
        )
    assert [d.state.value for d in done] == ["success"] * 6
    assert sorted(replies(pool, j.id)[0].split(".")[0] for j in jobs) == sorted(
        ["You are Sales", "You are Support", "You are Booking"] * 2
    )
    assert loads == {"vad": 1, "eot": 1}
    batched = models.shared_vad()
    assert all(s.vad._engine is batched._engine for s in sessions)
    assert all(s.turn_detection is models.shared_turn_detector() for s in sessions)


async def test_a_capped_worker_reports_live_calls_over_its_cap_as_its_load(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent},
        max_concurrent_sessions=4,
        **FAKES,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver):
        record = devserver.worker(pool.worker_id)
        held = [await devserver.dispatch(simulated_call=call(hold_s=60)) for _ in range(2)]
        for job in held:
            await devserver.wait_job(job.id, {"running"})
        # pushed when each call is admitted, not at livekit's next 2.5 s status tick
        await wait_until(lambda: record.load == 0.5, timeout=1.0)
        assert record.status == "WS_AVAILABLE"

        held += [await devserver.dispatch(simulated_call=call(hold_s=60)) for _ in range(2)]
        await wait_until(lambda: record.load == 1.0, timeout=1.0)
        assert record.status == "WS_FULL"

        for job in held:
            await devserver.end_call(job.id)
        ended = [await devserver.wait_job(j.id, {"success", "failed"}) for j in held]
        assert [e.state.value for e in ended] == ["success"] * 4
        # back to the measured load alone: a few percent on an idle worker, never the cap's
        await wait_until(
            lambda: record.load < 0.25 and record.status == "WS_AVAILABLE", timeout=1.0
        )
