"""Signed tenant claims and per-tenant providers, unit-level and over the wire."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from openrtc import AgentPool, ConfigError, current_tenant_id
from openrtc.admission import RejectReason
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

SECRET = "tenant-test-secret-8c1f-0123456789abcdef"
OLD_STATIC_SIG = "3f" * 32
ENDED = {"success", "failed", "unserved"}


def replies(pool: AgentPool, job_id: str) -> list[str]:
    return [str(r) for r in pool.transcripts[job_id].replies]


def info_for(tenant: str, job_id: str = "AJ_1") -> SessionInfo:
    return SessionInfo(job_id, "t", "room", tenant, "v1", "W_1", {}, 0.0)


def test_a_claim_is_valid_only_for_its_tenant_room_job_key_and_time() -> None:
    claim = sign_tenant("acme", SECRET, room="room-a", ttl=60)
    assert verify_tenant(claim, SECRET, tenant="acme", room="room-a")
    assert not verify_tenant(claim, SECRET, tenant="acme", room="room-b")
    assert not verify_tenant(claim, SECRET, tenant="globex", room="room-a")
    assert not verify_tenant(claim, "another-secret-0123456789abcdef-xyz", tenant="acme",
                             room="room-a")  # fmt: skip
    by_job = sign_tenant("acme", SECRET, job_id="AJ_1")
    assert verify_tenant(by_job, SECRET, tenant="acme", room="any", job_id="AJ_1")
    assert not verify_tenant(by_job, SECRET, tenant="acme", room="any", job_id="AJ_2")
    stale = sign_tenant("acme", SECRET, room="room-a", ttl=10, now=time.time() - 60)
    assert not verify_tenant(stale, SECRET, tenant="acme", room="room-a")
    assert not verify_tenant(OLD_STATIC_SIG, SECRET, tenant="acme", room="room-a")
    assert not verify_tenant("é" * 64, SECRET, tenant="acme", room="room-a")
    assert not verify_tenant("x" * 5000, SECRET, tenant="acme", room="room-a")


def test_keys_rotate_and_short_or_missing_keys_are_refused() -> None:
    old = {"t1": SECRET}
    rotated = {"t2": "tenant-test-secret-two-0123456789abcdef", "t1": SECRET}
    from_old = sign_tenant("acme", old, room="r")
    assert verify_tenant(from_old, rotated, tenant="acme", room="r")
    from_new = sign_tenant("acme", rotated, room="r")
    assert verify_tenant(from_new, rotated, tenant="acme", room="r")
    assert not verify_tenant(from_new, old, tenant="acme", room="r")
    verifier = ClaimVerifier(old)
    assert verifier.check({"tenant_sig": from_new}, "acme", room="r", job_id="j") == (
        RejectReason.TENANT_FORGED,
        "the tenant claim names an unknown key id",
    )
    assert SECRET not in repr(verifier)
    with pytest.raises(ConfigError, match="at least 32"):
        sign_tenant("acme", "short", room="r")
    with pytest.raises(ValueError, match="room and/or the job"):
        sign_tenant("acme", SECRET)


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


async def test_a_room_bound_claim_is_served_only_in_its_room_and_before_it_expires(
    devserver: DispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[dict[str, object]] = []
    pool = AgentPool(
        agents={"t": TenantAgent},
        audit_sink=lambda e: events.append(e.to_dict()),
        **fakes(),
        config=PoolConfig.from_env(
            tenancy=Tenancy(secret=SECRET, settings={"acme": {}}),
            runtime=Runtime(prewarm_models=False),
        ),
    )
    claim_a = sign_tenant("acme", SECRET, room="room-a", ttl=60)
    async with running(pool, devserver):
        valid = await devserver.dispatch(
            room="room-a", metadata={"tenant": "acme", "tenant_sig": claim_a},
            simulated_call=call(),
        )  # fmt: skip
        other_room = await devserver.dispatch(
            room="room-b", metadata={"tenant": "acme", "tenant_sig": claim_a},
            simulated_call=call(), deadline=1.0,
        )  # fmt: skip
        expired = await devserver.dispatch(
            room="room-a",
            metadata={
                "tenant": "acme",
                "tenant_sig": sign_tenant(
                    "acme", SECRET, room="room-a", ttl=5, now=time.time() - 30
                ),
            },
            simulated_call=call(),
            deadline=1.0,
        )
        borrowed = await devserver.dispatch(
            room="room-a", metadata={"tenant": "globex", "tenant_sig": claim_a},
            simulated_call=call(), deadline=1.0,
        )  # fmt: skip
        static = await devserver.dispatch(
            room="room-c", metadata={"tenant": "acme", "tenant_sig": OLD_STATIC_SIG},
            simulated_call=call(), deadline=1.0,
        )  # fmt: skip
        unsigned = await devserver.dispatch(
            room="room-a", metadata={"tenant": "acme"}, simulated_call=call(), deadline=1.0
        )
        jobs = (valid, other_room, expired, borrowed, static, unsigned)
        done = await asyncio.gather(*(devserver.wait_job(j.id, ENDED, 15) for j in jobs))
    assert [d.state.value for d in done] == ["success"] + ["unserved"] * 5
    assert "You serve tenant acme." in replies(pool, valid.id)[0]
    refusals = {e["job_id"]: e["reason"] for e in events if e["event"] == "worker.rejected"}
    assert refusals == {
        other_room.id: "tenant_claim_mismatch",
        expired.id: "tenant_claim_expired",
        borrowed.id: "tenant_forged",
        static.id: "tenant_forged",
        unsigned.id: "tenant_unsigned",
    }
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(events)


async def test_unsigned_hostile_tenant_ids_stay_small_in_the_audit_and_out_of_labels(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from openrtc.config import AuditSettings
    from openrtc.ops.metrics import OTHER_TENANT, PoolMetrics

    huge = "x" * 300_000
    labelled = AgentPool(
        agents={"t": TenantAgent},
        **fakes(),
        config=PoolConfig.from_env(
            tenancy=Tenancy(unknown="defaults", settings={"acme": {}}),
            runtime=Runtime(prewarm_models=False),
        ),
    )
    async with running(labelled, devserver):
        live = await devserver.dispatch(
            room="room-h", metadata={"tenant": huge}, simulated_call=call(hold_s=1.0)
        )
        await wait_until(lambda: len(labelled.live_sessions()) == 1)
        text = PoolMetrics(labelled).render().decode()
        await devserver.wait_job(live.id, ENDED, 15)

    audit = tmp_path / "audit.jsonl"
    pool = AgentPool(
        agents={"t": TenantAgent},
        **fakes(),
        config=PoolConfig.from_env(
            tenancy=Tenancy(unknown="refuse", settings={"acme": {}}),
            audit=AuditSettings(path=audit, refusal_interval_s=30.0),
            runtime=Runtime(prewarm_models=False),
        ),
    )
    async with running(pool, devserver):
        flood = [
            await devserver.dispatch(
                room="room-h", metadata={"tenant": huge}, simulated_call=call(), deadline=0.5
            )
            for _ in range(21)
        ]
        await asyncio.gather(*(devserver.wait_job(j.id, ENDED, 15) for j in flood))
    pool.audit_log.close()  # records the count of the interval still open
    labels = {
        s.labels.get("tenant")
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "tenant" in s.labels
    }
    assert labels <= {"default", "acme", OTHER_TENANT} and OTHER_TENANT in labels
    assert huge[:1000] not in text
    assert audit.stat().st_size < 64_000
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    refused = [r for r in records if r["event"] == "worker.rejected"]
    assert len(refused) == 1 and refused[0]["reason"] == "tenant_unknown"
    repeated = [r for r in records if r["event"] == "audit.refusals_repeated"]
    counted = len(refused) + sum(int(r["count"]) for r in repeated)
    assert counted == pool.runtime_snapshot().rejected_total["tenant_unknown"] >= 21


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
