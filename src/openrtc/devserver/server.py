"""The loopback LiveKit dispatch server: the `/agent` worker websocket plus the control API.

It speaks the real worker protocol (protobuf frames, JWT auth, register, offers,
assignments, terminations, migration), so an unmodified `livekit.agents.AgentServer`
cannot tell it from a LiveKit server at the dispatch level. There is no media server:
jobs that call `ctx.connect()` fail to join their room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent, models

from ..errors import ConfigError
from .auth import check_worker_bearer
from .connection import WorkerConnection
from .control import ControlApi
from .dispatcher import Dispatcher
from .events import EventLog, Signal
from .records import DevEvent, JobRecord, JobState, WorkerRecord, new_id
from .request import DispatchRequest

logger = logging.getLogger("openrtc.devserver")

REGISTER_TIMEOUT = 10.0
"""How long a fresh worker socket may take to send its `register` message."""

HEARTBEAT = 15.0
"""Seconds between websocket pings, so a worker host that vanishes is noticed."""

SERVER_VERSION = "openrtc-devserver"


class DispatchServer:
    """A LiveKit dispatch server on loopback; use `async with` or `start()`/`aclose()`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "devkey",
        api_secret: str | None = None,
        offer_timeout: float = 3.0,
        dispatch_deadline: float = 10.0,
        migrate_grace: float = 10.0,
    ) -> None:
        for name, value in (
            ("offer_timeout", offer_timeout),
            ("dispatch_deadline", dispatch_deadline),
            ("migrate_grace", migrate_grace),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be more than 0 seconds, got {value!r}.")
        if not api_key:
            raise ConfigError("api_key must be a non-empty string.")
        self.host = host
        self.api_key = api_key
        self.api_secret = api_secret or secrets.token_urlsafe(32)
        self._requested_port = port
        self._port: int | None = None
        self._signal = Signal()
        self._events = EventLog(self._signal)
        self._verifier = api.TokenVerifier(self.api_key, self.api_secret)
        self._dispatcher = Dispatcher(
            api_key=self.api_key,
            api_secret=self.api_secret,
            ws_url=lambda: self.ws_url,
            events=self._events,
            offer_timeout=offer_timeout,
            dispatch_deadline=dispatch_deadline,
            migrate_grace=migrate_grace,
        )
        self._runner: web.AppRunner | None = None

    # -- lifetime --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the dispatch server is not started; call await start() first")
        return self._port

    @property
    def ws_url(self) -> str:
        return f"ws://{self._url_host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    async def start(self) -> None:
        """Bind the socket (port 0 picks a free one) and start serving."""
        if self._runner is not None:
            raise RuntimeError("the dispatch server is already started")
        if self._dispatcher.closed:
            raise RuntimeError("a closed dispatch server cannot restart; create a new one")
        app = web.Application()
        app.router.add_get("/agent", self._agent_socket)
        app.router.add_routes(
            ControlApi(self._dispatcher, self._events, self._signal, self._verifier).routes()
        )
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {self.host}:{self._requested_port} ({exc.strerror}); "
                "pick another port or use port=0 for a free one."
            ) from None
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        self._port = sock.getsockname()[1]
        logger.info("dispatch server listening on %s (api key %s)", self.ws_url, self.api_key)

    async def aclose(self) -> None:
        """Stop offering, close every worker socket normally, then stop listening."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._dispatcher.aclose()
        connections = self._dispatcher.connections()
        await asyncio.gather(*(conn.close() for conn in connections))
        await runner.cleanup()
        logger.info("dispatch server on port %s closed", self._port)

    async def __aenter__(self) -> DispatchServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the worker websocket --------------------------------------------------------

    async def _agent_socket(self, request: web.Request) -> web.StreamResponse:
        try:
            check_worker_bearer(request.headers.get("Authorization"), self._verifier)
        except PermissionError as exc:
            logger.warning("refused a worker from %s: %s", request.remote, exc)
            return web.json_response({"error": f"{exc}."}, status=401)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT)
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "expected a websocket upgrade."}, status=400)
        transport = request.transport
        await ws.prepare(request)
        register = await self._read_register(ws)
        if register is None:
            return ws
        conn = WorkerConnection(ws, transport)
        worker_id = new_id("AW_")
        info = models.ServerInfo(
            version=SERVER_VERSION, region="loopback", node_id=SERVER_VERSION, protocol=1
        )
        response = agent.RegisterWorkerResponse(worker_id=worker_id, server_info=info)
        try:
            await ws.send_bytes(agent.ServerMessage(register=response).SerializeToString())
        except (ConnectionError, RuntimeError):
            return ws
        worker = self._dispatcher.add_worker(worker_id, register, conn)
        try:
            await self._read_loop(ws, worker)
        finally:
            self._dispatcher.worker_gone(worker_id)
            conn.finished.set()
        return ws

    async def _read_register(self, ws: web.WebSocketResponse) -> agent.RegisterWorkerRequest | None:
        try:
            msg = await ws.receive(timeout=REGISTER_TIMEOUT)
        except TimeoutError:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"register timeout")
            return None
        first = agent.WorkerMessage()
        if msg.type == WSMsgType.BINARY:
            with contextlib.suppress(DecodeError):
                first.ParseFromString(msg.data)
        if first.WhichOneof("message") != "register":
            logger.warning("closed a worker socket whose first message was not register")
            await ws.close(code=WSCloseCode.PROTOCOL_ERROR, message=b"expected register")
            return None
        return first.register

    async def _read_loop(self, ws: web.WebSocketResponse, worker: WorkerRecord) -> None:
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.BINARY:
                logger.warning("ignored a non-binary frame from worker %s", worker.id)
                continue
            parsed = agent.WorkerMessage()
            try:
                parsed.ParseFromString(msg.data)
            except DecodeError:
                logger.warning("ignored an undecodable frame from worker %s", worker.id)
                continue
            await self._dispatcher.handle(worker, parsed)

    # -- Python API ------------------------------------------------------------------

    async def dispatch(
        self,
        agent_name: str = "",
        room: str | None = None,
        metadata: str | dict[str, Any] | None = None,
        room_metadata: str | dict[str, Any] | None = None,
        simulated_call: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> JobRecord:
        """Create a job and start offering it; returns its (live) record at once."""
        request = DispatchRequest.build(
            agent_name=agent_name,
            room=room,
            metadata=metadata,
            room_metadata=room_metadata,
            simulated_call=simulated_call,
            deadline=deadline,
        )
        return self._dispatcher.dispatch(request)

    async def end_call(self, job_id: str) -> JobRecord:
        """Hang up: send JobTermination to the worker running the job."""
        return await self._dispatcher.end_call(job_id)

    def workers(self) -> list[WorkerRecord]:
        return list(self._dispatcher.workers.values())

    def worker(self, worker_id: str) -> WorkerRecord:
        try:
            return self._dispatcher.workers[worker_id]
        except KeyError:
            raise LookupError(f"no worker {worker_id!r} ever registered here.") from None

    def jobs(self) -> list[JobRecord]:
        return list(self._dispatcher.jobs.values())

    def job(self, job_id: str) -> JobRecord:
        return self._dispatcher.job(job_id)

    def events(self, since: int = 0) -> list[DevEvent]:
        return self._events.since(since)

    async def wait_job(
        self, job_id: str, states: Iterable[str | JobState], timeout: float = 10.0
    ) -> JobRecord:
        """Wait until the job is in one of `states`; TimeoutError names the state it is in."""
        job = self.job(job_id)
        wanted = {JobState(state) for state in states}
        try:
            return await self._signal.wait_until(
                lambda: job if job.state in wanted else None, timeout, f"job {job_id} ending"
            )
        except TimeoutError:
            names = ", ".join(sorted(state.value for state in wanted))
            raise TimeoutError(
                f"job {job_id} is still {job.state.value} after {timeout:g}s (waited for {names})"
            ) from None

    async def wait_for_event(
        self, kind: str, timeout: float = 10.0, *, since: int = 0, **match: Any
    ) -> DevEvent:
        """The first event after `since` of this kind whose fields equal `match`."""
        return await self._signal.wait_until(
            lambda: self._events.find(kind, since, **match), timeout, f"event {kind}"
        )

    async def wait_for_worker(self, agent_name: str = "", timeout: float = 10.0) -> WorkerRecord:
        """The oldest connected worker registered under `agent_name`, once there is one."""

        def connected() -> WorkerRecord | None:
            for worker in self._dispatcher.workers.values():
                if worker.connected and worker.agent_name == agent_name:
                    return worker
            return None

        return await self._signal.wait_until(
            connected, timeout, f"a worker registering as {agent_name!r}"
        )

    async def drop_worker_socket(self, worker_id: str, timeout: float = 5.0) -> None:
        """Cut a worker's connection abruptly, then wait until it is recorded as gone."""
        conn = self._dispatcher.connection(worker_id)
        if conn is None:
            raise LookupError(f"worker {worker_id!r} is not connected.")
        conn.abort()
        await asyncio.wait_for(conn.finished.wait(), timeout)
