"""A worker whose version leaves the signed manifest stops taking calls; a rollback restores it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import aiohttp
import pytest
from livekit.agents import Agent, JobRequest
from livekit.protocol import agent as lk_proto
from livekit.protocol import models

from openrtc import AgentPool
from openrtc.config import Deployment, PoolConfig, Runtime
from openrtc.deploy.manifest import sign_manifest
from openrtc.devserver import DispatchServer
from openrtc.pool import Refuse
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.worker.lifespan import EXIT_OK
from tests.harness import running, wait_until

SECRET = "manifest-secret-for-tests"


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def publish(
    path: Path, versions: list[str], secret: str = SECRET, issued_at: float | None = None
) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(sign_manifest(versions, secret=secret, issued_at=issued_at))
    tmp.replace(path)


def refusal_reason(pool: AgentPool, job_id: str) -> str | None:
    """What the worker answers an offer that still reaches it (the server saw it full)."""
    request = JobRequest(
        job=lk_proto.Job(id=job_id + "-late", room=models.Room(name="room-late")),
        on_reject=_noop_reject,
        on_accept=_noop_accept,
    )
    decision = pool.decide(request)
    return decision.reason_name if isinstance(decision, Refuse) else None


async def _noop_reject(terminate: bool) -> None:
    return None


async def _noop_accept(args: object) -> None:
    return None


def member_pool(
    manifest: Path, events: list[dict[str, object]], *, drain_when_not_member: bool = False
) -> AgentPool:
    """v1.0.0 under `manifest` (polled every 0.1 s), auditing into `events`."""
    return AgentPool(
        agents={"sales": Sales},
        deployment_version="v1.0.0",
        audit_sink=lambda e: events.append(e.to_dict()),
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(
            deployment=Deployment(
                manifest=manifest,
                membership_secrets=[SECRET],
                manifest_poll_interval=0.1,
                drain_when_not_member=drain_when_not_member,
            ),
            runtime=Runtime(prewarm_models=False),
        ),
    )


async def readyz(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as resp:
        return resp.status, json.loads(await resp.text())


async def test_membership_follows_the_manifest(devserver: DispatchServer, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    publish(manifest, ["v1.0.0"])
    events: list[dict[str, object]] = []
    pool = member_pool(manifest, events)
    call = {"turns": ["hi"], "mode": "text", "pause_s": 0.0}
    async with running(pool, devserver, http_port=0) as worker:
        assert worker.lifespan.ops is not None
        ops = worker.lifespan.ops.url
        assert pool.runtime_snapshot().member is True
        assert (await readyz(ops))[0] == 200

        publish(manifest, ["v2.0.0"])
        await wait_until(lambda: pool.state.value == "not_member", timeout=5)
        status, body = await readyz(ops)
        assert status == 503 and "manifest" in str(body["reason"])
        job = await devserver.dispatch(simulated_call=call, deadline=1.0)
        assert (await devserver.wait_job(job.id, {"unserved", "success"}, timeout=5)).state == (
            "unserved"
        )
        assert devserver.worker(pool.worker_id).status == "WS_FULL"
        assert refusal_reason(pool, job.id) == "not_member"

        (tmp_path / "forged.json").write_text(sign_manifest(["v1.0.0"], secret="wrong"))
        (tmp_path / "forged.json").replace(manifest)
        await wait_until(
            lambda: any(e["event"] == "membership.manifest_rejected" for e in events), timeout=5
        )
        assert pool.state.value == "not_member"  # the last valid manifest stays in force

        publish(manifest, ["v1.0.0", "v2.0.0"], issued_at=time.time() + 1)
        await wait_until(lambda: pool.state.value == "accepting", timeout=5)
        job = await devserver.dispatch(simulated_call=call)
        assert (await devserver.wait_job(job.id, {"success", "unserved"}, timeout=10)).state == (
            "success"
        )
    changes = [e for e in events if e["event"] == "membership.changed"]
    assert [c["member"] for c in changes] == [True, False, True]


async def test_a_worker_set_to_drain_when_dropped_finishes_its_calls_and_exits_0(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    publish(manifest, ["v1.0.0"])
    events: list[dict[str, object]] = []
    pool = member_pool(manifest, events, drain_when_not_member=True)
    held = {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": 60.0}
    async with running(pool, devserver) as worker:
        jobs = [await devserver.dispatch(simulated_call=held) for _ in range(2)]
        for job in jobs:
            await devserver.wait_job(job.id, {"running"})

        publish(manifest, ["v2.0.0"])
        await wait_until(lambda: pool.state.value == "draining", timeout=5)
        assert pool.runtime_snapshot().active_sessions == 2
        assert not worker.task.done()  # the live calls keep the worker up
        for job in jobs:
            await devserver.end_call(job.id)
        ended = [await devserver.wait_job(j.id, {"success", "failed", "cancelled"}) for j in jobs]
        assert [e.state.value for e in ended] == ["success", "success"]
        assert await worker.exit_code() == EXIT_OK
    # the drop and the drain it asks for are applied together: the drain wins
    assert [t.state.value for t in pool.lifecycle.history] == [
        "accepting",
        "not_member",
        "draining",
        "drained",
        "stopped",
    ]
    (drain,) = [e for e in events if e["event"] == "deployment.drain_started"]
    assert (drain["actor"], drain["reason"]) == ("manifest", "version left the manifest")
    assert pool.runtime_snapshot().outcomes_total == {"success": 2}


HOSTILE = {
    "400-digit issued_at": (
        '{"format": "openrtc-manifest/1", "active_versions": ["v1.0.0"], "issued_at": '
        + "9" * 400
        + ', "expires_at": null, "key_id": null, "signature": "'
        + "0" * 64
        + '"}'
    ),
    "non-ASCII signature": "",  # filled from a real manifest below
    "deeply nested JSON": "[" * 30_000 + "]" * 30_000,
    "huge file": "v" * (3 << 20),
}


def _hostile(name: str) -> str:
    if name == "non-ASCII signature":
        return sign_manifest(["v1.0.0"], secret=SECRET).rpartition(".")[0] + "." + "é" * 64
    return HOSTILE[name]


async def test_hostile_manifests_are_refused_audited_and_the_last_valid_one_stays(
    devserver: DispatchServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openrtc.deploy.membership")
    manifest = tmp_path / "manifest.json"
    publish(manifest, ["v1.0.0"])
    events: list[dict[str, object]] = []
    pool = member_pool(manifest, events)
    call = {"turns": ["hi"], "mode": "text", "pause_s": 0.0}

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "manifest rejected" in r.getMessage()]

    async with running(pool, devserver):
        for count, name in enumerate(HOSTILE, start=1):
            (tmp_path / "next").write_text(_hostile(name), encoding="utf-8")
            (tmp_path / "next").replace(manifest)
            await wait_until(lambda n=count: len(refusals()) == n, timeout=5)  # type: ignore[misc]
            assert pool.state.value == "accepting", name
            job = await devserver.dispatch(simulated_call=call)
            done = await devserver.wait_job(job.id, {"success", "unserved"}, timeout=10)
            assert done.state.value == "success", name
    pool.audit_log.close()
    logged = refusals()
    assert "is not an openrtc-membership/2 document" in logged[0]
    assert "non-ASCII" in logged[1]
    assert "is not an openrtc-membership/2 document" in logged[2]
    assert "larger than" in logged[3]
    audited = [e for e in events if e["event"] == "membership.manifest_rejected"]
    repeated = [
        e
        for e in events
        if e["event"] == "audit.refusals_repeated"
        and e["refused_event"] == "membership.manifest_rejected"
    ]
    assert len(audited) == 3  # the second "not a document" is counted, not written again
    assert len(audited) + sum(int(str(e["count"])) for e in repeated) == len(HOSTILE)
    assert all(len(str(e["reason"])) < 200 for e in audited)


async def test_a_worker_starting_with_a_bad_manifest_starts_closed_then_follows_a_good_one(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(HOSTILE["400-digit issued_at"], encoding="utf-8")
    events: list[dict[str, object]] = []
    pool = member_pool(manifest, events)
    call = {"turns": ["hi"], "mode": "text", "pause_s": 0.0}
    async with running(pool, devserver) as worker:
        assert not worker.task.done()
        assert pool.state.value == "not_member"
        job = await devserver.dispatch(simulated_call=call, deadline=1.0)
        refused = await devserver.wait_job(job.id, {"unserved", "success"}, timeout=5)
        assert refused.state.value == "unserved"

        publish(manifest, ["v1.0.0"])
        await wait_until(lambda: pool.state.value == "accepting", timeout=5)
        job = await devserver.dispatch(simulated_call=call)
        served = await devserver.wait_job(job.id, {"success", "unserved"}, timeout=10)
        assert served.state.value == "success"
    (rejected, *_) = [e for e in events if e["event"] == "membership.manifest_rejected"]
    assert "is not an openrtc-membership/2 document" in str(rejected["reason"])
