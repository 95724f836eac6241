"""Fixtures for the dispatch server tests: the server, real AgentServers, raw-protocol workers."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from livekit import api
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobRequest
from livekit.protocol import agent

from openrtc.devserver import DispatchServer


@pytest.fixture
async def dispatch_server() -> AsyncIterator[DispatchServer]:
    async with DispatchServer(offer_timeout=1.0, dispatch_deadline=3.0, migrate_grace=2.0) as srv:
        yield srv


def worker_token(api_key: str, api_secret: str, *, agent_grant: bool = True) -> str:
    """The token a LiveKit worker presents on `/agent`."""
    return (
        api.AccessToken(api_key, api_secret)
        .with_grants(api.VideoGrants(agent=agent_grant))
        .to_jwt()
    )


# -- real, unmodified livekit AgentServers ------------------------------------------------


@dataclass
class StartedAgentServer:
    server: AgentServer
    task: asyncio.Task[None]
    worker_id: str


Entrypoint = Callable[[JobContext], Awaitable[None]]
RequestFnc = Callable[[JobRequest], Awaitable[None]]
StartAgentServer = Callable[..., Awaitable[StartedAgentServer]]


@pytest.fixture
async def start_agent_server(
    dispatch_server: DispatchServer,
) -> AsyncIterator[StartAgentServer]:
    """Start an unmodified AgentServer (thread executor) and wait until it registered."""
    started: list[StartedAgentServer] = []

    async def start(
        entrypoint: Entrypoint,
        *,
        agent_name: str = "",
        on_request: RequestFnc | None = None,
        server: DispatchServer | None = None,
    ) -> StartedAgentServer:
        target = server or dispatch_server
        agent_server = AgentServer(
            ws_url=target.ws_url,
            api_key=target.api_key,
            api_secret=target.api_secret,
            job_executor_type=JobExecutorType.THREAD,
            num_idle_processes=0,
            load_threshold=math.inf,
            load_fnc=lambda: 0.0,
            host="127.0.0.1",
            port=0,
        )
        agent_server.rtc_session(entrypoint, agent_name=agent_name, on_request=on_request)
        mark = len(target.events())
        task = asyncio.create_task(agent_server.run(devmode=True))
        event = await target.wait_for_event(
            "worker_registered", timeout=15, since=mark, agent_name=agent_name
        )
        handle = StartedAgentServer(agent_server, task, event.fields["worker_id"])
        started.append(handle)
        return handle

    yield start
    for handle in reversed(started):
        await handle.server.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.task, 10)


# -- a raw-protocol worker, to script what a worker answers and when -----------------------


@dataclass
class RawWorker:
    """A worker speaking the protobufs directly over aiohttp; answers offers as told."""

    server: DispatchServer
    agent_name: str = ""
    accept: bool = True
    terminate: bool = False
    answer_delay: float = 0.0
    report_running: bool = True
    worker_id: str = ""
    assignments: dict[str, agent.JobAssignment] = field(default_factory=dict)
    terminations: list[str] = field(default_factory=list)
    pongs: list[agent.WorkerPong] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    close_code: int | None = None
    _session: aiohttp.ClientSession | None = None
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> RawWorker:
        self._session = aiohttp.ClientSession()
        token = worker_token(self.server.api_key, self.server.api_secret)
        self._ws = await self._session.ws_connect(
            f"{self.server.ws_url}/agent", headers={"Authorization": f"Bearer {token}"}
        )
        register = agent.RegisterWorkerRequest(
            type=agent.JobType.JT_ROOM, agent_name=self.agent_name, version="raw-1"
        )
        await self.send(agent.WorkerMessage(register=register))
        first = agent.ServerMessage()
        first.ParseFromString(await self._ws.receive_bytes(timeout=5))
        assert first.WhichOneof("message") == "register"
        self.worker_id = first.register.worker_id
        self._reader = asyncio.create_task(self._read())
        return self

    async def send(self, msg: agent.WorkerMessage) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(msg.SerializeToString())

    async def send_status(self, job_id: str, status: int, error: str = "") -> None:
        update = agent.UpdateJobStatus(job_id=job_id, status=status, error=error)  # type: ignore[arg-type]
        await self.send(agent.WorkerMessage(update_job=update))

    async def send_worker_status(self, status: int, load: float = 0.0) -> None:
        update = agent.UpdateWorkerStatus(status=status, load=load)  # type: ignore[arg-type]
        await self.send(agent.WorkerMessage(update_worker=update))

    async def sync(self, timeout: float = 5.0) -> None:
        """Ping and wait for the pong: every message sent before has been handled."""
        stamp = time.monotonic_ns()
        await self.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=stamp)))

        async def until() -> None:
            while not any(p.last_timestamp == stamp for p in self.pongs):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def wait_assigned(self, count: int = 1, timeout: float = 5.0) -> None:
        async def until() -> None:
            while len(self.assignments) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            if raw.type != aiohttp.WSMsgType.BINARY:
                continue
            msg = agent.ServerMessage()
            msg.ParseFromString(raw.data)
            which = msg.WhichOneof("message")
            if which == "availability":
                task = asyncio.create_task(self._answer(msg.availability.job.id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif which == "assignment":
                self.assignments[msg.assignment.job.id] = msg.assignment
                if self.report_running:
                    await self.send_status(msg.assignment.job.id, agent.JobStatus.JS_RUNNING)
            elif which == "termination":
                self.terminations.append(msg.termination.job_id)
                await self.send_status(msg.termination.job_id, agent.JobStatus.JS_CANCELLED)
            elif which == "pong":
                self.pongs.append(msg.pong)
            self._changed.set()
        self.close_code = self._ws.close_code
        self._changed.set()

    async def _answer(self, job_id: str) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.answer_delay)
            answer = agent.AvailabilityResponse(
                job_id=job_id,
                available=self.accept,
                terminate=self.terminate,
                participant_identity=f"raw-{job_id}",
            )
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send(agent.WorkerMessage(availability=answer))
        finally:
            self.in_flight -= 1

    async def wait_closed(self, timeout: float = 5.0) -> None:
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


ConnectRaw = Callable[..., Awaitable[RawWorker]]


@pytest.fixture
async def raw_worker(dispatch_server: DispatchServer) -> AsyncIterator[ConnectRaw]:
    """Connect raw-protocol workers (closed at teardown); keyword args set RawWorker fields."""
    workers: list[RawWorker] = []

    async def connect(server: DispatchServer | None = None, **options: Any) -> RawWorker:
        worker = RawWorker(server=server or dispatch_server, **options)
        workers.append(worker)
        return await worker.connect()

    yield connect
    for worker in workers:
        await worker.close()
