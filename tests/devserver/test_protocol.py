"""The worker protocol as the server speaks it, driven by raw-protocol workers."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent

from openrtc.devserver import DispatchServer, JobState

from .conftest import ConnectRaw, RawWorker, worker_token


def _bad_headers(kind: str, server: DispatchServer) -> dict[str, str]:
    if kind == "no-header":
        return {}
    if kind == "not-bearer":
        return {"Authorization": f"Basic {server.api_key}"}
    key, secret, grant = server.api_key, server.api_secret, True
    if kind == "wrong-secret":
        secret = "x" * 43
    elif kind == "wrong-key":
        key = "other"
    elif kind == "no-agent-grant":
        grant = False
    return {"Authorization": f"Bearer {worker_token(key, secret, agent_grant=grant)}"}


@pytest.mark.parametrize(
    "kind", ["wrong-secret", "wrong-key", "no-agent-grant", "no-header", "not-bearer"]
)
async def test_worker_with_a_bad_token_is_refused_before_the_upgrade(
    dispatch_server: DispatchServer, kind: str
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(
                f"{dispatch_server.ws_url}/agent", headers=_bad_headers(kind, dispatch_server)
            )
    assert refused.value.status == 401
    assert dispatch_server.workers() == []


async def test_first_message_must_be_register(dispatch_server: DispatchServer) -> None:
    token = worker_token(dispatch_server.api_key, dispatch_server.api_secret)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{dispatch_server.ws_url}/agent", headers={"Authorization": f"Bearer {token}"}
        ) as ws,
    ):
        ping = agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1))
        await ws.send_bytes(ping.SerializeToString())
        msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.PROTOCOL_ERROR
    assert dispatch_server.workers() == []


async def test_register_ping_and_worker_status_are_tracked(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    worker = await raw_worker(agent_name="sales")
    record = dispatch_server.worker(worker.worker_id)
    assert worker.worker_id.startswith("AW_")
    assert (record.agent_name, record.version, record.connected) == ("sales", "raw-1", True)

    await worker.send_worker_status(agent.WorkerStatus.WS_FULL, load=0.9)
    await worker.sync()
    assert worker.pongs[0].timestamp > 0
    assert dispatch_server.events()[-1].kind == "worker_status"
    assert record.status == "WS_FULL"
    assert record.load == pytest.approx(0.9)


async def test_assignment_carries_the_job_and_a_real_room_token(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    worker = await raw_worker()
    job = await dispatch_server.dispatch(
        room="support-1",
        metadata='{"lang": "en"}',
        room_metadata={"tenant": "acme"},
        simulated_call={"turns": ["hello"]},
    )
    await worker.wait_assigned()
    assignment = worker.assignments[job.id]

    assert assignment.url == dispatch_server.ws_url
    assert assignment.job.type == agent.JobType.JT_ROOM
    assert assignment.job.room.name == "support-1"
    assert json.loads(assignment.job.room.metadata) == {"tenant": "acme"}
    assert json.loads(assignment.job.metadata) == {
        "lang": "en",
        "simulated_call": {"turns": ["hello"]},
    }
    assert assignment.job.dispatch_id == job.dispatch_id

    claims = api.TokenVerifier(dispatch_server.api_key, dispatch_server.api_secret).verify(
        assignment.token
    )
    assert claims.identity == f"raw-{job.id}"
    assert claims.kind == "agent"
    assert claims.video is not None
    assert (claims.video.room_join, claims.video.room, claims.video.agent) == (
        True,
        "support-1",
        True,
    )
    running = await dispatch_server.wait_job(job.id, {"running"})
    assert running.worker_version == "raw-1"
    assert running.participant_identity == f"raw-{job.id}"


async def test_job_status_and_error_are_recorded(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    worker = await raw_worker()
    job = await dispatch_server.dispatch()
    await dispatch_server.wait_job(job.id, {"running"})
    await worker.send_status(job.id, agent.JobStatus.JS_FAILED, error="llm timed out")
    done = await dispatch_server.wait_job(job.id, {"failed"})
    assert (done.error, done.ended_by) == ("llm timed out", "worker")
    assert dispatch_server.worker(worker.worker_id).jobs == []


async def test_status_for_a_job_a_worker_does_not_hold_is_ignored(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    holder = await raw_worker()
    job = await dispatch_server.dispatch()
    await dispatch_server.wait_job(job.id, {"running"})
    intruder = await raw_worker()
    await intruder.send_status(job.id, agent.JobStatus.JS_SUCCESS)
    await holder.send_status(job.id, agent.JobStatus.JS_SUCCESS)
    done = await dispatch_server.wait_job(job.id, {"success"})
    assert done.worker_id == holder.worker_id
    assert [e.fields["worker_id"] for e in dispatch_server.events() if e.kind == "job_status"][
        -1
    ] == holder.worker_id


async def test_lowest_load_then_fewest_jobs_then_oldest_gets_the_offer(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    oldest = await raw_worker()
    busy = await raw_worker()
    idle = await raw_worker()
    for worker, load in ((oldest, 0.5), (busy, 0.1), (idle, 0.1)):
        await worker.send_worker_status(agent.WorkerStatus.WS_AVAILABLE, load=load)
        await worker.sync()

    first = await dispatch_server.dispatch()
    await dispatch_server.wait_job(first.id, {"running"})
    second = await dispatch_server.dispatch()
    await dispatch_server.wait_job(second.id, {"running"})
    third = await dispatch_server.dispatch()
    await dispatch_server.wait_job(third.id, {"running"})

    # busy and idle tie on load 0.1; busy is older; then idle has fewer jobs;
    # then both hold one job and busy is older again; oldest (load 0.5) never gets one
    assert [first.worker_id, second.worker_id, third.worker_id] == [
        busy.worker_id,
        idle.worker_id,
        busy.worker_id,
    ]


async def test_agent_name_must_match_exactly(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    await raw_worker(agent_name="")
    named = await raw_worker(agent_name="sales")
    job = await dispatch_server.dispatch(agent_name="sales")
    assert (await dispatch_server.wait_job(job.id, {"running"})).worker_id == named.worker_id
    missing = await dispatch_server.dispatch(agent_name="Sales", deadline=0.3)
    done = await dispatch_server.wait_job(missing.id, {"unserved"})
    assert done.offers == []


async def test_a_full_worker_is_skipped_until_it_is_available_again(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    worker = await raw_worker()
    await worker.send_worker_status(agent.WorkerStatus.WS_FULL)
    await dispatch_server.wait_for_event("worker_status", status="WS_FULL")
    job = await dispatch_server.dispatch(deadline=5)
    await asyncio.sleep(0.3)
    assert dispatch_server.job(job.id).offers == []

    await worker.send_worker_status(agent.WorkerStatus.WS_AVAILABLE)
    done = await dispatch_server.wait_job(job.id, {"running", "unserved"})
    assert done.state is JobState.RUNNING
    assert done.worker_id == worker.worker_id


async def test_refusal_with_terminate_ends_the_dispatch(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    refuser = await raw_worker(accept=False, terminate=True)
    await raw_worker()
    job = await dispatch_server.dispatch()
    done = await dispatch_server.wait_job(job.id, {"unserved", "running"})
    assert done.state is JobState.UNSERVED
    assert [o.worker_id for o in done.offers] == [refuser.worker_id]


async def test_an_unanswered_offer_times_out_and_moves_on() -> None:
    async with DispatchServer(offer_timeout=0.3, dispatch_deadline=5.0) as server:
        silent = await RawWorker(server, answer_delay=60).connect()
        willing = await RawWorker(server).connect()
        try:
            job = await server.dispatch()
            done = await server.wait_job(job.id, {"running"})
            assert done.worker_id == willing.worker_id
            assert done.offers[0].worker_id == silent.worker_id
            assert done.offers[0].available is False
            assert done.offers[0].answered_in_ms is None
            assert done.offers[1].answered_in_ms is not None
        finally:
            await silent.close()
            await willing.close()


async def test_offers_are_sent_concurrently(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    worker = await raw_worker(answer_delay=0.5)
    started = time.monotonic()
    jobs = [await dispatch_server.dispatch() for _ in range(10)]
    await worker.wait_assigned(count=10, timeout=10)
    elapsed = time.monotonic() - started

    assert worker.max_in_flight == 10
    assert elapsed < 3.0, f"10 offers answered after 0.5s each took {elapsed:.1f}s: serialized?"
    assert {j.worker_id for j in jobs} == {worker.worker_id}


async def test_end_call_on_a_raw_worker_and_on_a_pending_job(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    worker = await raw_worker()
    job = await dispatch_server.dispatch()
    await dispatch_server.wait_job(job.id, {"running"})
    await dispatch_server.end_call(job.id)
    done = await dispatch_server.wait_job(job.id, {"cancelled"})
    assert worker.terminations == [job.id]
    assert done.ended_by == "server"

    nobody = await dispatch_server.dispatch(agent_name="nobody")
    ended = await dispatch_server.end_call(nobody.id)
    assert (ended.state, ended.ended_by) == (JobState.CANCELLED, "server")


async def test_unmigrated_jobs_are_dropped_after_the_grace_period() -> None:
    async with DispatchServer(migrate_grace=0.4) as server:
        holder = await RawWorker(server).connect()
        idle = await RawWorker(server).connect()
        job = await server.dispatch()
        await server.wait_job(job.id, {"running"})
        mark = len(server.events())
        await holder.close()
        await idle.close()

        gone = await server.wait_for_event(
            "worker_disconnected", since=mark, worker_id=holder.worker_id
        )
        assert gone.fields["jobs"] == [job.id]
        assert server.job(job.id).state is JobState.RUNNING, "kept during the grace period"
        dropped = await server.wait_job(job.id, {"dropped"}, timeout=3)
        assert dropped.ended_at is not None and holder.worker_id in dropped.error
        assert not server.worker(idle.worker_id).connected
        idle_gone = server.events(mark)
        assert [
            e.fields["jobs"]
            for e in idle_gone
            if e.kind == "worker_disconnected" and e.fields["worker_id"] == idle.worker_id
        ] == [[]]
        assert [e.kind for e in server.events(mark)].count("job_dropped") == 1


async def test_a_raw_worker_can_migrate_a_job_after_reconnecting(
    dispatch_server: DispatchServer, raw_worker: ConnectRaw
) -> None:
    first = await raw_worker()
    job = await dispatch_server.dispatch()
    await dispatch_server.wait_job(job.id, {"running"})

    # while the first connection is alive, another worker cannot take its job
    thief = await raw_worker()
    await thief.send(agent.WorkerMessage(migrate_job=agent.MigrateJobRequest(job_ids=[job.id])))
    await thief.sync()
    await dispatch_server.drop_worker_socket(first.worker_id)
    await first.wait_closed()
    assert dispatch_server.job(job.id).worker_id == first.worker_id

    second = await raw_worker()
    await second.send(agent.WorkerMessage(migrate_job=agent.MigrateJobRequest(job_ids=[job.id])))
    await dispatch_server.wait_for_event("job_migrated", job_id=job.id)
    await second.send_status(job.id, agent.JobStatus.JS_SUCCESS)
    done = await dispatch_server.wait_job(job.id, {"success"})
    assert done.worker_id == second.worker_id
    assert dispatch_server.worker(second.worker_id).jobs == []


async def test_aclose_closes_worker_sockets_normally_and_leaves_no_tasks() -> None:
    server = DispatchServer()
    await server.start()
    silent = await RawWorker(server, answer_delay=60).connect()
    job = await server.dispatch()
    await server.wait_for_event("job_offered", job_id=job.id)

    await server.aclose()
    await silent.wait_closed()
    assert silent.close_code == aiohttp.WSCloseCode.OK
    assert server.job(job.id).state is JobState.UNSERVED
    leftovers = [
        task
        for task in asyncio.all_tasks()
        if any("openrtc/devserver" in frame.f_code.co_filename for frame in task.get_stack())
    ]
    assert leftovers == []
    await silent.close()
    with pytest.raises(RuntimeError, match="closed"):
        await server.dispatch()
    with pytest.raises(RuntimeError, match="cannot restart"):
        await server.start()
