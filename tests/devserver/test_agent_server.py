"""An unmodified livekit AgentServer against the dispatch server, over real websockets."""

from __future__ import annotations

import asyncio
import json

from livekit.agents import JobContext, JobRequest

from openrtc.devserver import DispatchServer, JobState

from .conftest import StartAgentServer


async def test_unmodified_agent_server_runs_a_job_to_success(
    dispatch_server: DispatchServer, start_agent_server: StartAgentServer
) -> None:
    ran: list[tuple[str, str, str]] = []

    async def entrypoint(ctx: JobContext) -> None:
        ran.append((ctx.job.id, ctx.job.room.name, ctx.job.metadata))
        ctx.shutdown()

    started = await start_agent_server(entrypoint)
    worker = dispatch_server.worker(started.worker_id)
    assert worker.connected and worker.version and worker.agent_name == ""

    job = await dispatch_server.dispatch(room="lobby", metadata={"caller": "+100"})
    assert job.id.startswith("AJ_") and job.state is JobState.PENDING
    done = await dispatch_server.wait_job(job.id, {"success", "failed"}, timeout=15)

    assert done.state is JobState.SUCCESS
    assert done.ended_by == "worker"
    assert done.worker_id == started.worker_id
    assert done.worker_version == worker.version
    assert ran == [(job.id, "lobby", json.dumps({"caller": "+100"}))]
    kinds = [e.kind for e in dispatch_server.events() if e.fields.get("job_id") == job.id]
    assert kinds == [
        "job_created",
        "job_offered",
        "job_offer_answered",
        "job_assigned",
        "job_status",
        "job_status",
    ]
    assert done.running_at is not None and done.ended_at is not None
    assert started.worker_id not in worker.jobs


async def test_end_call_terminates_the_job_on_its_worker(
    dispatch_server: DispatchServer, start_agent_server: StartAgentServer
) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        return  # without ctx.shutdown() the job stays active until it is terminated

    await start_agent_server(entrypoint)
    job = await dispatch_server.dispatch()
    await dispatch_server.wait_job(job.id, {"running"}, timeout=15)

    await dispatch_server.end_call(job.id)
    done = await dispatch_server.wait_job(job.id, {"success", "failed", "cancelled"}, timeout=15)
    assert done.ended_by == "server"
    assert dispatch_server.events()[-1].kind == "job_status"
    assert any(
        e.kind == "job_terminated_sent" and e.fields["job_id"] == job.id
        for e in dispatch_server.events()
    )


async def test_a_refused_job_goes_to_the_next_worker(
    dispatch_server: DispatchServer, start_agent_server: StartAgentServer
) -> None:
    async def reject(req: JobRequest) -> None:
        await req.reject(terminate=False)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.shutdown()

    # the refusing worker registers first, so it is the oldest and gets the first offer
    refuser = await start_agent_server(entrypoint, on_request=reject)
    taker = await start_agent_server(entrypoint)

    job = await dispatch_server.dispatch()
    done = await dispatch_server.wait_job(job.id, {"success", "failed", "unserved"}, timeout=15)

    assert done.state is JobState.SUCCESS
    assert done.worker_id == taker.worker_id
    assert [(o.worker_id, o.available) for o in done.offers] == [
        (refuser.worker_id, False),
        (taker.worker_id, True),
    ]


async def test_a_job_refused_by_every_worker_is_unserved(
    dispatch_server: DispatchServer, start_agent_server: StartAgentServer
) -> None:
    async def reject(req: JobRequest) -> None:
        await req.reject(terminate=False)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.shutdown()

    picky = await start_agent_server(entrypoint, agent_name="picky", on_request=reject)
    await start_agent_server(entrypoint)  # a willing worker under another name never gets it

    job = await dispatch_server.dispatch(agent_name="picky", deadline=1.2)
    done = await dispatch_server.wait_job(job.id, {"unserved", "success"}, timeout=5)

    assert done.state is JobState.UNSERVED
    assert done.worker_id is None
    assert done.offers, "the picky worker should have been offered the job"
    assert {o.worker_id for o in done.offers} == {picky.worker_id}
    assert len(done.offers) >= 2, "after every worker refused, the whole set is retried"
    assert all(o.available is False for o in done.offers)
    assert "picky" in done.error


async def test_worker_reconnects_after_a_dropped_socket_and_migrates_its_call(
    dispatch_server: DispatchServer, start_agent_server: StartAgentServer
) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await asyncio.sleep(2.0)
        ctx.shutdown()

    started = await start_agent_server(entrypoint)
    job = await dispatch_server.dispatch()
    await dispatch_server.wait_job(job.id, {"running"}, timeout=15)
    mark = len(dispatch_server.events())

    await dispatch_server.drop_worker_socket(started.worker_id)
    assert not dispatch_server.worker(started.worker_id).connected
    assert dispatch_server.job(job.id).state is JobState.RUNNING

    migrated = await dispatch_server.wait_for_event(
        "job_migrated", timeout=10, since=mark, job_id=job.id
    )
    done = await dispatch_server.wait_job(job.id, {"success", "failed", "dropped"}, timeout=15)

    new_id = migrated.fields["to_worker"]
    assert migrated.fields["from_worker"] == started.worker_id
    assert new_id != started.worker_id
    assert done.state is JobState.SUCCESS
    assert done.worker_id == new_id
    assert dispatch_server.worker(new_id).connected
    assert dispatch_server.worker(started.worker_id).jobs == []
