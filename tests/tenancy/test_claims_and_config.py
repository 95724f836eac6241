"""Signed tenant claims and per-tenant providers, unit-level and over the wire."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from openrtc import AgentPool, ConfigError, current_tenant_id
from openrtc.config import PoolConfig, Runtime, Tenancy
from openrtc.devserver import DispatchServer
from openrtc.sessions import SessionInfo, enter_call
from openrtc.tenancy import (
    ClaimVerifier,
    TenantDirectory,
    sign_tenant,
    verify_tenant,
)
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

from .agents import OwnedLLM, TenantAgent, call, fakes

SECRET = "tenant-test-secret-8c1f"
ENDED = {"success", "failed", "unserved"}


def replies(pool: AgentPool, job_id: str) -> list[str]:
    return [str(r) for r in pool.transcripts[job_id].replies]


def info_for(tenant: str, job_id: str = "AJ_1") -> SessionInfo:
    return SessionInfo(job_id, "t", "room", tenant, "v1", "W_1", {}, 0.0)


def test_a_signature_is_valid_only_for_its_tenant_and_secret() -> None:
    sig = sign_tenant("acme", SECRET)
    assert verify_tenant("acme", sig, SECRET)
    assert verify_tenant("acme", sig.upper(), SECRET)
    assert not verify_tenant("globex", sig, SECRET)
    assert not verify_tenant("acme", sign_tenant("acme", "another-secret"), SECRET)
    assert not verify_tenant("acme", "é" * 64, SECRET)
    assert SECRET not in repr(ClaimVerifier(SECRET))
    with pytest.raises(ConfigError, match="tenant_secret is empty"):
        sign_tenant("acme", "")


def test_bad_tenant_options_are_refused_when_the_pool_is_built() -> None:
    shared = FakeLLM()
    with pytest.raises(ConfigError, match="same llm object to tenants 'a' and 'b'"):
        AgentPool(
            agents={"t": TenantAgent},
            config=PoolConfig.from_env(
                tenancy=Tenancy(settings={"a": {"llm": shared}, "b": {"llm": shared}})
            ),
        )
    with pytest.raises(ConfigError, match="unknown key"):
        AgentPool(
            agents={"t": TenantAgent},
            config=PoolConfig.from_env(tenancy=Tenancy(settings={"a": {"lmm": FakeLLM()}})),
        )
    with pytest.raises(ConfigError, match="max_sessions"):
        AgentPool(
            agents={"t": TenantAgent},
            config=PoolConfig.from_env(tenancy=Tenancy(settings={"a": {"max_sessions": 0}})),
        )
    with pytest.raises(ConfigError, match="isolation='coroutine' or 'thread'"):
        AgentPool(
            agents={"t": TenantAgent},
            isolation="process",
            config=PoolConfig.from_env(tenancy=Tenancy(settings={"a": {"llm": 1}})),
        )
    capped = AgentPool(
        agents={"t": TenantAgent},
        isolation="process",
        config=PoolConfig.from_env(tenancy=Tenancy(settings={"a": {"max_sessions": 1}})),
    )
    assert capped.config.tenancy.settings is not None
    with pytest.raises(ConfigError, match="--unknown-tenant"):
        AgentPool(
            agents={"t": TenantAgent}, config=PoolConfig.from_env(tenancy=Tenancy(unknown="allow"))
        )  # type: ignore[arg-type]


def test_a_callable_config_that_hands_one_tenants_provider_to_another_fails_the_call() -> None:
    shared = FakeLLM()
    directory = TenantDirectory(lambda tenant: {"llm": shared} if tenant in "ab" else None)
    options: dict[str, object] = {}
    directory.apply(info_for("a"), options)
    assert options["llm"] is shared
    with pytest.raises(ConfigError, match="same llm object to tenants 'a' and 'b'"):
        directory.apply(info_for("b"), {})
    assert directory.check("zeta", 0) is not None
    assert directory.check("a", 0) is None


async def test_the_tenant_of_the_running_call_is_visible_to_its_code_only() -> None:
    async def in_call(tenant: str) -> str:
        enter_call(info_for(tenant))
        await asyncio.sleep(0)
        return current_tenant_id()

    assert await asyncio.gather(in_call("acme"), in_call("globex")) == ["acme", "globex"]
    assert current_tenant_id() == "default"


async def test_only_a_validly_signed_tenant_claim_is_served(
    devserver: DispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[dict[str, object]] = []
    pool = AgentPool(
        agents={"t": TenantAgent},
        audit_sink=lambda e: events.append(e.to_dict()),
        **fakes(),
        config=PoolConfig.from_env(
            tenancy=Tenancy(secret=SECRET), runtime=Runtime(prewarm_models=False)
        ),
    )
    async with running(pool, devserver):
        valid = await devserver.dispatch(
            metadata={"tenant": "acme", "tenant_sig": sign_tenant("acme", SECRET)},
            simulated_call=call(),
        )
        borrowed = await devserver.dispatch(
            metadata={"tenant": "globex", "tenant_sig": sign_tenant("acme", SECRET)},
            simulated_call=call(),
            deadline=1.0,
        )
        wrong_key = await devserver.dispatch(
            metadata={"tenant": "acme", "tenant_sig": sign_tenant("acme", "guessed")},
            simulated_call=call(),
            deadline=1.0,
        )
        unsigned = await devserver.dispatch(
            metadata={"tenant": "acme"}, simulated_call=call(), deadline=1.0
        )
        done = await asyncio.gather(
            *(devserver.wait_job(j.id, ENDED, 15) for j in (valid, borrowed, wrong_key, unsigned))
        )
    assert [d.state.value for d in done] == ["success", "unserved", "unserved", "unserved"]
    assert "You serve tenant acme." in replies(pool, valid.id)[0]
    rejected = pool.runtime_snapshot().rejected_total
    assert set(rejected) == {"tenant_forged", "tenant_unsigned"}
    refusals = {(e["job_id"], e["reason"]) for e in events if e["event"] == "worker.rejected"}
    assert refusals == {
        (borrowed.id, "tenant_forged"),
        (wrong_key.id, "tenant_forged"),
        (unsigned.id, "tenant_unsigned"),
    }
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(events)


async def llm_owners(pool: AgentPool, count: int) -> dict[str, str]:
    """The owner of each live call's LLM, once `count` calls have their session."""
    await wait_until(lambda: sum(s.session is not None for s in pool.live_sessions()) == count)
    return {s.info.job_id: s.session.llm.owner for s in pool.live_sessions()}


async def test_each_tenant_gets_its_own_providers_and_an_unknown_tenant_is_refused(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"t": TenantAgent},
        default_stt=FakeSTT(),
        default_llm=OwnedLLM("pool"),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(
            tenancy=Tenancy(
                settings={"acme": {"llm": OwnedLLM("acme")}, "globex": {"llm": OwnedLLM("globex")}}
            ),
            runtime=Runtime(prewarm_models=False),
        ),
    )
    async with running(pool, devserver):
        jobs = [
            await devserver.dispatch(metadata={"tenant": t}, simulated_call=call(hold_s=1.0))
            for t in ("acme", "acme", "globex")
        ]
        stranger = await devserver.dispatch(
            metadata={"tenant": "initech"}, simulated_call=call(), deadline=1.0
        )
        owners = await llm_owners(pool, 3)
        done = await asyncio.gather(*(devserver.wait_job(j.id, ENDED, 15) for j in jobs))
        refused = await devserver.wait_job(stranger.id, ENDED, 15)
    assert [d.state.value for d in done] == ["success"] * 3
    assert [owners[j.id] for j in jobs] == ["acme", "acme", "globex"]
    assert "You serve tenant globex." in replies(pool, jobs[2].id)[0]
    assert refused.state.value == "unserved"
    assert set(pool.runtime_snapshot().rejected_total) == {"tenant_unknown"}


async def test_unknown_tenants_can_use_the_pool_defaults_and_it_is_logged(
    devserver: DispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openrtc.tenancy")
    acme_llm = OwnedLLM("acme")
    pool = AgentPool(
        agents={"t": TenantAgent},
        default_stt=FakeSTT(),
        default_llm=OwnedLLM("pool"),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(
            tenancy=Tenancy(
                settings=lambda tenant: {"llm": acme_llm} if tenant == "acme" else None,
                unknown="defaults",
            ),
            runtime=Runtime(prewarm_models=False),
        ),
    )
    async with running(pool, devserver):
        acme, other = [
            await devserver.dispatch(metadata={"tenant": t}, simulated_call=call(hold_s=1.0))
            for t in ("acme", "initech")
        ]
        owners = await llm_owners(pool, 2)
        done = await asyncio.gather(*(devserver.wait_job(j.id, ENDED, 15) for j in (acme, other)))
    assert [d.state.value for d in done] == ["success", "success"]
    assert (owners[acme.id], owners[other.id]) == ("acme", "pool")
    assert "You serve tenant initech." in replies(pool, other.id)[0]
    assert f"call {other.id}: tenant 'initech' is not in tenant_config" in caplog.text
    assert f"call {acme.id}: tenant" not in caplog.text
