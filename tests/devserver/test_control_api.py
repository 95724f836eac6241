"""The control HTTP API, through DevServerClient and raw requests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent

from openrtc.devserver import DevServerClient, DevServerClientError, DispatchServer

from .conftest import ConnectRaw


@pytest.fixture
async def client(dispatch_server: DispatchServer) -> AsyncIterator[DevServerClient]:
    async with DevServerClient(
        dispatch_server.http_url, dispatch_server.api_key, dispatch_server.api_secret
    ) as c:
        yield c


async def test_dispatch_and_read_back_through_the_client(
    dispatch_server: DispatchServer, client: DevServerClient, raw_worker: ConnectRaw
) -> None:
    worker = await raw_worker(agent_name="sales")
    created = await client.dispatch(
        agent_name="sales", room="r1", metadata={"a": 1}, simulated_call={"say": "hi"}
    )
    assert created["state"] == "pending"
    assert created["room"] == "r1"
    assert json.loads(created["metadata"]) == {"a": 1, "simulated_call": {"say": "hi"}}

    running = await client.wait_job(created["id"], {"running"})
    assert running["worker_id"] == worker.worker_id
    assert running["offers"][0]["available"] is True
    assert dispatch_server.job(created["id"]).to_dict() == await client.job(created["id"])

    workers = await client.workers()
    assert [(w["id"], w["agent_name"], w["jobs"]) for w in workers] == [
        (worker.worker_id, "sales", [created["id"]])
    ]
    assert [j["id"] for j in await client.jobs()] == [created["id"]]

    ended = await client.end_call(created["id"])
    assert ended["id"] == created["id"]
    done = await client.wait_job(created["id"])
    assert (done["state"], done["ended_by"]) == ("cancelled", "server")

    events = await client.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "worker_registered"
    assert "job_terminated_sent" in kinds
    later = await client.events(since=events[-2]["seq"])
    assert later == events[-1:]


async def test_events_long_poll_returns_when_an_event_arrives(
    dispatch_server: DispatchServer, client: DevServerClient, raw_worker: ConnectRaw
) -> None:
    worker = await raw_worker()
    last = len(dispatch_server.events())
    await worker.send_worker_status(agent.WorkerStatus.WS_FULL)
    fresh = await client.events(since=last, wait=5)
    assert [e["kind"] for e in fresh] == ["worker_status"]
    assert await client.events(since=fresh[-1]["seq"], wait=0.1) == []


@pytest.mark.parametrize(
    "path",
    ["/openrtc/workers", "/openrtc/jobs", "/openrtc/events"],
)
async def test_requests_without_a_valid_token_get_401(
    dispatch_server: DispatchServer, path: str
) -> None:
    wrong = api.AccessToken(dispatch_server.api_key, "n" * 43).to_jwt()
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": f"Bearer {wrong}"}):
            async with session.get(dispatch_server.http_url + path, headers=headers) as resp:
                assert resp.status == 401
                assert "error" in await resp.json()
        async with session.post(
            dispatch_server.http_url + "/openrtc/dispatch", json={}, headers={}
        ) as resp:
            assert resp.status == 401
    assert dispatch_server.jobs() == []


async def test_a_client_with_the_wrong_secret_is_refused(dispatch_server: DispatchServer) -> None:
    async with DevServerClient(dispatch_server.http_url, dispatch_server.api_key, "n" * 43) as bad:
        with pytest.raises(DevServerClientError) as refused:
            await bad.dispatch()
    assert refused.value.status == 401
    assert dispatch_server.jobs() == []


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ("not json", "JSON"),
        ("[1, 2]", "JSON object"),
        ('{"agent_name": 3}', "agent_name"),
        ('{"room": ""}', "room"),
        ('{"metadata": 5}', "metadata"),
        ('{"metadata": "plain text", "simulated_call": {}}', "simulated_call"),
        ('{"simulated_call": "script"}', "simulated_call"),
        ('{"deadline": -1}', "deadline"),
        ('{"deadline": "soon"}', "deadline"),
        ('{"agent": "x"}', "unknown field"),
    ],
)
async def test_a_bad_dispatch_body_gets_400(
    dispatch_server: DispatchServer, body: str, mentions: str
) -> None:
    token = api.AccessToken(dispatch_server.api_key, dispatch_server.api_secret).to_jwt()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            dispatch_server.http_url + "/openrtc/dispatch",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert mentions in error
    assert error.endswith(".") and error.count(". ") == 0, "one sentence"
    assert dispatch_server.jobs() == []


async def test_unknown_jobs_and_ended_jobs_get_404_and_409(
    dispatch_server: DispatchServer, client: DevServerClient
) -> None:
    with pytest.raises(DevServerClientError) as missing:
        await client.job("AJ_missing")
    assert missing.value.status == 404

    job = await client.dispatch(agent_name="nobody")
    await client.end_call(job["id"])
    with pytest.raises(DevServerClientError) as ended:
        await client.end_call(job["id"])
    assert ended.value.status == 409
    assert "cancelled" in ended.value.message

    with pytest.raises(DevServerClientError) as bad_query:
        await client.events(since=-1)
    assert bad_query.value.status == 400
