"""Exact caps against any server: a real worker driven by a server that misbehaves."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from livekit.protocol import agent

from openrtc import AgentPool
from openrtc.audit import AuditEvent
from openrtc.config import PoolConfig, Runtime, Tenancy
from openrtc.tenancy.claims import sign_tenant
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

from .agents import SalesAgent
from .hostile_server import answer_for, hostile_server, job, status_of

FAKES = {"default_stt": FakeSTT(), "default_llm": FakeLLM(), "default_tts": FakeTTS()}
ASSIGNMENT_TIMEOUT = 7.5
"""How long livekit's worker waits for an assignment after answering an offer."""

RUNNING = agent.JobStatus.JS_RUNNING
FAILED = agent.JobStatus.JS_FAILED


def capped_pool(
    cap: int, events: list[AuditEvent] | None = None, tenancy: Tenancy | None = None
) -> AgentPool:
    sink: Any = None if events is None else events.append
    groups: dict[str, Any] = {"runtime": Runtime(prewarm_models=False)}
    if tenancy is not None:
        groups["tenancy"] = tenancy
    return AgentPool(
        agents={"sales": SalesAgent},
        max_concurrent_sessions=cap,
        audit_sink=sink,
        **FAKES,
        config=PoolConfig.from_env(**groups),
    )


async def test_a_reoffered_live_job_is_answered_from_what_the_worker_holds_and_keeps_its_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="openrtc")
    pool = capped_pool(1)
    async with hostile_server() as server, running(pool, server):  # type: ignore[arg-type]
        live = job("J_live", hold_s=ASSIGNMENT_TIMEOUT + 6)
        await server.offer(live)
        first = (await server.wait_for(answer_for("J_live"))).availability
        assert first.available
        await server.assign(live, first.participant_identity)
        await server.wait_for(status_of("J_live", RUNNING))

        # the same offer again, and no assignment follows it
        await server.offer(live)
        await wait_until(lambda: len(server.messages(answer_for("J_live"))) == 2, timeout=5)
        again = server.messages(answer_for("J_live"))[1].availability
        assert again.available
        assert again.participant_identity == first.participant_identity

        # a termination for a job this worker never ran changes nothing
        await server.terminate("J_never_ran")

        # long after an assignment would have timed out, the live call still holds the slot
        await asyncio.sleep(ASSIGNMENT_TIMEOUT + 1)
        assert pool.admitted == 1
        assert [s.info.job_id for s in pool.live_sessions()] == ["J_live"]
        await server.offer(job("J_other", hold_s=1))
        other = (await server.wait_for(answer_for("J_other"))).availability
        assert not other.available
        assert pool.runtime_snapshot().rejected_total == {"at_capacity": 1}
        assert pool.runtime_snapshot().accepted_total == 1
    assert any("J_never_ran" in r.getMessage() for r in caplog.records)


async def test_assignments_never_offered_or_too_late_are_refused_and_ended_cleanly() -> None:
    events: list[AuditEvent] = []
    pool = capped_pool(2, events)
    async with hostile_server() as server, running(pool, server):  # type: ignore[arg-type]
        # never offered: refused, reported failed, never run
        await server.assign(job("J_stray", hold_s=30))
        stray = (await server.wait_for(status_of("J_stray", FAILED))).update_job
        assert "never offered" in stray.error

        # offered and accepted, but the assignment comes after the worker stopped waiting
        late = job("J_late", hold_s=30)
        await server.offer(late)
        assert (await server.wait_for(answer_for("J_late"))).availability.available
        await wait_until(lambda: pool.admitted == 0, timeout=ASSIGNMENT_TIMEOUT + 5)
        await server.assign(late)
        tardy = (await server.wait_for(status_of("J_late", FAILED))).update_job
        assert "timed out" in tardy.error

        await asyncio.sleep(0.5)
        assert pool.live_sessions() == []
        assert pool.admitted == 0
        assert not server.messages(status_of("J_stray", RUNNING))
        assert not server.messages(status_of("J_late", RUNNING))
        assert pool.runtime_snapshot().accepted_total == 0

        # the cap still holds exactly: two calls fit, a third is refused
        for job_id in ("J_a", "J_b", "J_c"):
            await server.offer(job(job_id, hold_s=3))
            answer = (await server.wait_for(answer_for(job_id))).availability
            if answer.available:
                await server.assign(job(job_id, hold_s=3), answer.participant_identity)
        answers = [
            server.messages(answer_for(j))[0].availability.available for j in ("J_a", "J_b", "J_c")
        ]
        assert answers == [True, True, False]
    refused = [e for e in events if e.event == "worker.rejected"]
    assert {e.fields["reason"] for e in refused} == {"invalid_job", "at_capacity"}


async def test_offers_that_break_the_decision_are_refused_as_invalid_job_once_per_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[AuditEvent] = []
    secret = "claims-secret-0123456789abcdef-0123456789abcdef"
    pool = capped_pool(5, events, Tenancy(secret=secret, unknown="defaults"))
    caplog.set_level(logging.INFO)
    nested = "[" * 200_000 + "]" * 200_000
    surrogate = '{"tenant": "\\ud800", "tenant_sig": "00", "agent": "sales"}'
    async with hostile_server() as server, running(pool, server):  # type: ignore[arg-type]
        bad = [job(f"J_bad{i}", metadata=nested if i % 2 else surrogate) for i in range(30)]
        for offer in bad:
            await server.offer(offer)
        for offer in bad:
            answer = (await server.wait_for(answer_for(offer.id))).availability
            assert not answer.available
        # a well-formed offer after the flood is still taken
        good = {"tenant": "acme", "tenant_sig": sign_tenant("acme", secret, room="room-J_good")}
        await server.offer(job("J_good", metadata=json.dumps(good)))
        assert (await server.wait_for(answer_for("J_good"))).availability.available
    # a lone surrogate in a signed tenant claim is now decided (forged), not an exception
    assert pool.runtime_snapshot().rejected_total == {"invalid_job": 15, "tenant_forged": 15}
    audited = [e for e in events if e.fields.get("reason") == "invalid_job"]
    assert len(audited) == 1
    assert not [r for r in caplog.records if r.exc_info is not None]
    assert not [r for r in caplog.records if "Traceback" in r.getMessage()]
    invalid_lines = [r for r in caplog.records if "invalid_job" in r.getMessage()]
    assert len(invalid_lines) == 1
