"""The control HTTP API: dispatch, hang up and inspect, for tools in other processes.

It answers only on loopback and only to a bearer token signed with the server's
API key and secret, the same credentials a worker needs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from livekit import api

from .auth import check_bearer
from .dispatcher import Dispatcher
from .errors import DevServerError, InvalidDispatchError
from .events import EventLog, Signal
from .request import DispatchRequest

MAX_WAIT = 60.0
"""Longest an events request may hold the connection waiting for a new event."""

_Endpoint = Callable[[web.Request], Awaitable[Any]]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlApi:
    """Route handlers for `/openrtc/...`; each returns JSON, errors as `{"error": ...}`."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        events: EventLog,
        signal: Signal,
        verifier: api.TokenVerifier,
    ) -> None:
        self._dispatcher = dispatcher
        self._events = events
        self._signal = signal
        self._verifier = verifier

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/openrtc/dispatch", self._guard(self._dispatch)),
            web.post("/openrtc/jobs/{job_id}/end", self._guard(self._end)),
            web.get("/openrtc/workers", self._guard(self._workers)),
            web.get("/openrtc/jobs", self._guard(self._jobs)),
            web.get("/openrtc/jobs/{job_id}", self._guard(self._job)),
            web.get("/openrtc/events", self._guard(self._list_events)),
        ]

    def _guard(self, endpoint: _Endpoint) -> _Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            if not _is_loopback(request.remote):
                return _error(403, "the control API answers only on the loopback interface.")
            try:
                check_bearer(request.headers.get("Authorization"), self._verifier)
            except PermissionError as exc:
                return _error(401, f"{exc}.")
            try:
                return web.json_response(await endpoint(request))
            except DevServerError as exc:
                return _error(exc.status, str(exc))

        return handler

    async def _dispatch(self, request: web.Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            raise InvalidDispatchError("the request body is not valid JSON.") from None
        job = self._dispatcher.dispatch(DispatchRequest.from_json(body))
        return job.to_dict()

    async def _end(self, request: web.Request) -> Any:
        job = await self._dispatcher.end_call(request.match_info["job_id"])
        return job.to_dict()

    async def _workers(self, request: web.Request) -> Any:
        return {"workers": [w.to_dict() for w in self._dispatcher.workers.values()]}

    async def _jobs(self, request: web.Request) -> Any:
        return {"jobs": [j.to_dict() for j in self._dispatcher.jobs.values()]}

    async def _job(self, request: web.Request) -> Any:
        return self._dispatcher.job(request.match_info["job_id"]).to_dict()

    async def _list_events(self, request: web.Request) -> Any:
        since = _query_int(request, "since")
        wait = _query_seconds(request, "wait", MAX_WAIT)
        if wait > 0 and not self._events.since(since):
            with contextlib.suppress(TimeoutError):
                await self._signal.wait_until(
                    lambda: self._events.since(since) or None, wait, "a new event"
                )
        events = self._events.since(since)
        return {
            "events": [e.to_dict() for e in events],
            "last_seq": len(self._events.since(0)),
        }


def _query_int(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "0")
    if not raw.isdigit():
        raise InvalidDispatchError(f"query parameter {name} must be a whole number from 0.")
    return int(raw)


def _query_seconds(request: web.Request, name: str, upper: float) -> float:
    raw = request.query.get(name, "0")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= upper:
        raise InvalidDispatchError(f"query parameter {name} must be seconds from 0 to {upper:g}.")
    return value


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json"
    )
