"""A dispatch server that misbehaves on purpose, built from the loopback server's pieces.

It checks the worker's token and registers it like the real one, then does only what a
test tells it: offer a job twice, assign a job never offered or too late, terminate a
job the worker never ran. Every message the worker sends is kept for the test to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent, models

from openrtc.devserver.auth import check_worker_bearer, room_token
from openrtc.simulation.script import SIMULATED_CALL_KEY

Predicate = Callable[[agent.WorkerMessage], bool]


class HostileServer:
    def __init__(self) -> None:
        self.api_key = "hostile"
        self.api_secret = secrets.token_urlsafe(24)
        self._verifier = api.TokenVerifier(self.api_key, self.api_secret)
        self._ws: web.WebSocketResponse | None = None
        self.received: list[agent.WorkerMessage] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/agent", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        try:
            check_worker_bearer(request.headers.get("Authorization"), self._verifier)
        except PermissionError as e:
            return web.json_response({"error": str(e)}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = agent.WorkerMessage()
        first.ParseFromString((await ws.receive()).data)
        assert first.WhichOneof("message") == "register"
        reply = agent.RegisterWorkerResponse(worker_id="AW_hostile")
        await ws.send_bytes(agent.ServerMessage(register=reply).SerializeToString())
        self._ws = ws
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            parsed = agent.WorkerMessage()
            parsed.ParseFromString(msg.data)
            async with self._changed:
                self.received.append(parsed)
                self._changed.notify_all()
        return ws

    # --- what a test makes it do -----------------------------------------------------
    async def send(self, msg: agent.ServerMessage) -> None:
        assert self._ws is not None, "no worker connected"
        await self._ws.send_bytes(msg.SerializeToString())

    async def offer(self, job: agent.Job) -> None:
        await self.send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)))

    async def assign(self, job: agent.Job, identity: str | None = None) -> None:
        token = room_token(
            self.api_key,
            self.api_secret,
            room=job.room.name,
            identity=identity or f"agent-{job.id}",
        )
        assignment = agent.JobAssignment(job=job, url=self.ws_url, token=token)
        await self.send(agent.ServerMessage(assignment=assignment))

    async def terminate(self, job_id: str) -> None:
        await self.send(agent.ServerMessage(termination=agent.JobTermination(job_id=job_id)))

    async def wait_for(self, predicate: Predicate, timeout: float = 10.0) -> agent.WorkerMessage:
        """The first message (already received or coming) that matches."""

        def found() -> agent.WorkerMessage | None:
            return next((m for m in self.received if predicate(m)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        match = found()
        assert match is not None
        return match

    def messages(self, predicate: Predicate) -> list[agent.WorkerMessage]:
        return [m for m in self.received if predicate(m)]


def answer_for(job_id: str) -> Predicate:
    return lambda m: m.WhichOneof("message") == "availability" and m.availability.job_id == job_id


def status_of(job_id: str, status: int) -> Predicate:
    return lambda m: (
        m.WhichOneof("message") == "update_job"
        and m.update_job.job_id == job_id
        and m.update_job.status == status
    )


def job(job_id: str, *, hold_s: float = 0.0, metadata: str | None = None) -> agent.Job:
    """A room job; with no metadata given, a simulated call that holds `hold_s` seconds."""
    if metadata is None:
        script = {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": hold_s}
        metadata = json.dumps({SIMULATED_CALL_KEY: script})
    return agent.Job(
        id=job_id,
        type=agent.JobType.JT_ROOM,
        room=models.Room(name=f"room-{job_id}", sid=f"RM_{job_id}"),
        metadata=metadata,
    )


@contextlib.asynccontextmanager
async def hostile_server() -> AsyncIterator[HostileServer]:
    server = HostileServer()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


def worker_kwargs(server: HostileServer) -> dict[str, Any]:
    return {"ws_url": server.ws_url, "api_key": server.api_key, "api_secret": server.api_secret}
