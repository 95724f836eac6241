"""The per-tenant circuit breaker: its rules with a hand-moved clock, then over the wire."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from openrtc import AgentPool, ConfigError
from openrtc.config import PoolConfig, Runtime, Tenancy
from openrtc.devserver import DispatchServer
from openrtc.ops.metrics import PoolMetrics
from openrtc.sessions import Outcome
from openrtc.tenancy import TenantBreaker
from tests.harness import running, wait_until

from .agents import FAILING_TENANTS, TenantAgent, call, fakes

ENDED = {"success", "failed", "unserved"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker_with(clock: Clock, live: set[str], events: list[tuple[str, dict[str, Any]]]) -> Any:
    return TenantBreaker(
        failures=3,
        window_s=10,
        cooldown_s=5,
        clock=clock,
        is_admitted=lambda job_id: job_id in live,
        emit=lambda event, **fields: events.append((event, fields)),
    )


def test_failures_outside_the_window_do_not_trip_and_a_success_does_not_count() -> None:
    clock, events = Clock(), []
    breaker = breaker_with(clock, set(), events)
    for job in ("j1", "j2"):
        breaker.record("bad", job, Outcome.FAILED)
    clock.now += 11
    breaker.record("bad", "j3", Outcome.FAILED)
    breaker.record("bad", "j4", Outcome.SUCCESS)
    breaker.record("bad", "j5", Outcome.CANCELLED)
    assert breaker.state("bad") == "closed"
    breaker.record("bad", "j6", Outcome.FAILED)
    assert breaker.state("bad") == "closed"
    breaker.record("bad", "j7", Outcome.FAILED)
    assert breaker.state("bad") == "open"
    assert breaker.breaker_trips == {"bad": 1}
    assert [e for e, _ in events] == ["tenant.circuit_opened"]


def test_half_open_lets_one_trial_through_which_closes_or_reopens_the_circuit() -> None:
    clock, live, events = Clock(), set[str](), []
    breaker = breaker_with(clock, live, events)
    for job in ("j1", "j2", "j3"):
        breaker.record("bad", job, Outcome.FAILED)
    assert breaker.check("bad", "n1") is not None
    assert breaker.check("good", "g1") is None
    assert breaker.states() == {"bad": "open"}

    clock.now += 5
    assert breaker.state("bad") == "half_open"
    assert breaker.check("bad", "t1") is None
    live.add("t1")
    assert breaker.check("bad", "t2") is not None  # the trial is still running
    breaker.record("bad", "old", Outcome.FAILED)  # admitted before the trip: ignored
    breaker.record("bad", "t1", Outcome.FAILED)
    assert breaker.state("bad") == "open"
    assert breaker.breaker_trips == {"bad": 2}

    clock.now += 5
    assert breaker.check("bad", "t3") is None  # not admitted after all (another cap refused)
    assert breaker.check("bad", "t4") is None  # so the next call becomes the trial
    live.add("t4")
    breaker.record("bad", "t4", Outcome.SUCCESS)
    assert breaker.state("bad") == "closed"
    assert breaker.breaker_recoveries == {"bad": 1}
    assert [e for e, _ in events] == [
        "tenant.circuit_opened",
        "tenant.circuit_opened",
        "tenant.circuit_closed",
    ]
    assert all(f["tenant"] == "bad" and f["target"] == "bad" for _, f in events)


def test_breaker_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="--breaker-failures"):
        AgentPool(
            agents={"t": TenantAgent},
            config=PoolConfig.from_env(tenancy=Tenancy(breaker=True, breaker_failures=0)),
        )
    with pytest.raises(ConfigError, match="--breaker-cooldown"):
        AgentPool(
            agents={"t": TenantAgent},
            config=PoolConfig.from_env(tenancy=Tenancy(breaker=True, breaker_cooldown_s=-1)),
        )
    assert AgentPool(agents={"t": TenantAgent}).tenant_breaker is None


async def test_a_failing_tenant_is_cut_off_while_others_are_served_and_recovers(
    devserver: DispatchServer,
) -> None:
    events: list[dict[str, Any]] = []
    pool = AgentPool(
        agents={"t": TenantAgent},
        audit_sink=lambda e: events.append(e.to_dict()),
        **fakes(),
        config=PoolConfig.from_env(
            tenancy=Tenancy(
                breaker=True,
                breaker_failures=3,
                breaker_window_s=30,
                breaker_cooldown_s=1.5,
                settings={"bad": {}, "good": {}},  # configured tenants are metric labels
            ),
            runtime=Runtime(prewarm_models=False),
        ),
    )
    breaker = pool.tenant_breaker
    assert breaker is not None
    FAILING_TENANTS.add("bad")
    try:
        async with running(pool, devserver):
            good = await devserver.dispatch(
                metadata={"tenant": "good"}, simulated_call=call(hold_s=2.5)
            )
            for _ in range(3):
                job = await devserver.dispatch(metadata={"tenant": "bad"}, simulated_call=call())
                assert (await devserver.wait_job(job.id, ENDED)).state.value == "failed"
            assert breaker.state("bad") == "open"

            refused = await devserver.dispatch(
                metadata={"tenant": "bad"}, simulated_call=call(), deadline=0.8
            )
            other = await devserver.dispatch(metadata={"tenant": "good"}, simulated_call=call())
            assert (await devserver.wait_job(refused.id, ENDED)).state.value == "unserved"
            assert (await devserver.wait_job(other.id, ENDED)).state.value == "success"
            assert (await devserver.wait_job(good.id, ENDED)).state.value == "success"

            FAILING_TENANTS.discard("bad")
            await wait_until(lambda: breaker.state("bad") == "half_open", timeout=5)
            back = await devserver.dispatch(metadata={"tenant": "bad"}, simulated_call=call())
            assert (await devserver.wait_job(back.id, ENDED)).state.value == "success"
            await asyncio.sleep(0)
    finally:
        FAILING_TENANTS.discard("bad")
    assert breaker.state("bad") == "closed"
    assert (breaker.breaker_trips, breaker.breaker_recoveries) == ({"bad": 1}, {"bad": 1})
    snap = pool.runtime_snapshot()
    assert set(snap.rejected_total) == {"tenant_circuit_open"}
    assert snap.outcomes_total == {"failed": 3, "success": 3}
    kinds = [e["event"] for e in events if e["event"].startswith("tenant.")]
    assert kinds == ["tenant.circuit_opened", "tenant.circuit_closed"]
    refusals = [e for e in events if e["event"] == "worker.rejected"]
    assert {e["job_id"] for e in refusals} == {refused.id}
    metrics = {
        f.name: {s.labels.get("tenant"): s.value for s in f.samples if s.name.endswith("_total")}
        for f in text_string_to_metric_families(PoolMetrics(pool).render().decode())
        if f.name.startswith("openrtc_tenant_circuit_")
    }
    assert metrics["openrtc_tenant_circuit_trips"] == {"bad": 1.0}
    assert metrics["openrtc_tenant_circuit_recoveries"] == {"bad": 1.0}
