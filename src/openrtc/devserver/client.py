"""A small async client for the dispatch server's control API, for other processes.

Records come back as the JSON dicts the server sends (`JobRecord.to_dict()` shape).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import aiohttp

from .auth import control_token
from .errors import DevServerClientError

_FINAL = frozenset({"success", "failed", "cancelled", "unserved", "dropped"})


class DevServerClient:
    """Talks to `DispatchServer.http_url`, signing each request with the API key and secret."""

    def __init__(
        self, http_url: str, api_key: str, api_secret: str, *, timeout: float = 30.0
    ) -> None:
        self._base = http_url.rstrip("/")
        self._api_key = api_key
        self._api_secret = api_secret
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DevServerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        token = control_token(self._api_key, self._api_secret)
        headers = {"Authorization": f"Bearer {token}"}
        async with self._session.request(
            method, self._base + path, json=json, params=params, headers=headers
        ) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            if resp.status >= 400:
                message = body.get("error") if isinstance(body, dict) else None
                raise DevServerClientError(resp.status, str(message or resp.reason))
            return body

    async def dispatch(
        self,
        agent_name: str = "",
        room: str | None = None,
        metadata: str | dict[str, Any] | None = None,
        room_metadata: str | dict[str, Any] | None = None,
        simulated_call: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Create a job; returns its record as the server saw it (usually still pending)."""
        body: dict[str, Any] = {"agent_name": agent_name}
        for key, value in (
            ("room", room),
            ("metadata", metadata),
            ("room_metadata", room_metadata),
            ("simulated_call", simulated_call),
            ("deadline", deadline),
        ):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = await self._request("POST", "/openrtc/dispatch", json=body)
        return result

    async def end_call(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("POST", f"/openrtc/jobs/{job_id}/end")
        return result

    async def workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._request("GET", "/openrtc/workers"))["workers"]
        return result

    async def jobs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._request("GET", "/openrtc/jobs"))["jobs"]
        return result

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/openrtc/jobs/{job_id}")
        return result

    async def events(self, since: int = 0, wait: float = 0.0) -> list[dict[str, Any]]:
        """Events numbered after `since`; with `wait`, hold until one exists or time is up."""
        params = {"since": str(since), "wait": str(wait)}
        result: list[dict[str, Any]] = (
            await self._request("GET", "/openrtc/events", params=params)
        )["events"]
        return result

    async def wait_job(
        self, job_id: str, states: Iterable[str] = _FINAL, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait (by long-polling the event feed) until the job is in one of `states`."""
        wanted = set(states)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        since = 0
        while True:
            job = await self.job(job_id)
            if job["state"] in wanted:
                return job
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout:g}s")
            batch = await self.events(since, wait=min(remaining, 20.0))
            if batch:
                since = batch[-1]["seq"]
