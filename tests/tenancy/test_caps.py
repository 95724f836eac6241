"""Caps with tenants, over the wire: bursts of offers admit exactly what the caps allow."""

from __future__ import annotations

import asyncio
from collections import Counter

from openrtc import AgentPool
from openrtc.config import Limits, PoolConfig, Runtime, Tenancy
from openrtc.devserver import DispatchServer
from tests.harness import running

from .agents import TenantAgent, call, fakes

ENDED = {"success", "failed", "unserved"}


async def burst(
    devserver: DispatchServer, calls: list[dict[str, str]], hold_s: float = 2.5
) -> list[tuple[dict[str, str], str]]:
    """Dispatch every call at once (1 s to find a worker); each call's metadata and end."""
    jobs = await asyncio.gather(
        *(
            devserver.dispatch(metadata=meta, simulated_call=call(hold_s=hold_s), deadline=1.0)
            for meta in calls
        )
    )
    done = await asyncio.gather(*(devserver.wait_job(j.id, ENDED, timeout=30) for j in jobs))
    return [(meta, d.state.value) for meta, d in zip(calls, done, strict=True)]


async def test_two_tenants_with_caps_of_two_and_five_get_exactly_that_under_a_burst(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"t": TenantAgent},
        **fakes(),
        config=PoolConfig.from_env(
            tenancy=Tenancy(settings={"a": {"max_sessions": 2}, "b": {"max_sessions": 5}}),
            runtime=Runtime(prewarm_models=False),
        ),
    )
    async with running(pool, devserver):
        ended = await burst(devserver, [{"tenant": "a"}, {"tenant": "b"}] * 10)
    served = Counter(meta["tenant"] for meta, state in ended if state == "success")
    unserved = Counter(meta["tenant"] for meta, state in ended if state == "unserved")
    assert served == {"a": 2, "b": 5}
    assert unserved == {"a": 8, "b": 5}
    snap = pool.runtime_snapshot()
    assert snap.accepted_total == 7
    assert set(snap.rejected_total) == {"tenant_at_capacity"}


async def test_pool_wide_agent_and_tenant_caps_hold_together_under_a_burst(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": TenantAgent, "support": TenantAgent},
        max_concurrent_sessions=6,
        **fakes(),
        config=PoolConfig.from_env(
            limits=Limits(per_agent=4, per_tenant=3), runtime=Runtime(prewarm_models=False)
        ),
    )
    calls = (
        [{"tenant": "a", "agent": "sales"}] * 5
        + [{"tenant": "b", "agent": "sales"}] * 5
        + [{"tenant": "c", "agent": "support"}] * 5
    )
    async with running(pool, devserver):
        ended = await burst(devserver, calls)
    served = [meta for meta, state in ended if state == "success"]
    assert [state for _, state in ended].count("failed") == 0
    by_tenant = Counter(m["tenant"] for m in served)
    by_agent = Counter(m["agent"] for m in served)
    # every offer is taken until a cap binds, so the total cap is reached exactly
    assert len(served) == 6
    assert max(by_tenant.values()) <= 3
    assert by_agent["sales"] <= 4
    assert by_tenant["a"] + by_tenant["b"] == by_agent["sales"]
    assert pool.runtime_snapshot().accepted_total == 6
