"""Fetch `/snapshot` from workers' operations endpoints, with a short timeout.

`top` and `fleet` watch workers that may be busy, draining or already gone, so a fetch
never hangs for long and every failure becomes one `SnapshotError` whose message says
what went wrong and what to check.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from typing import Any

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8081"
FETCH_TIMEOUT = 2.0
"""Seconds one fetch may take; a worker that cannot answer /snapshot in this is unwell."""


class SnapshotError(Exception):
    """A worker's snapshot could not be fetched; `reason` is the short cause."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


def normalize_url(url: str) -> str:
    """Accept `host:port`, a base URL or a full /snapshot URL; return the base URL."""
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    url = url.rstrip("/")
    return url.removesuffix("/snapshot")


def _reason(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        if isinstance(error.os_error, socket.gaierror):
            return "unknown host; check the address"
        if isinstance(error.os_error, ConnectionRefusedError):
            return "connection refused; is the worker running with --http-port?"
        return f"{error.strerror or 'cannot connect'}; check the address and port"
    if isinstance(error, TimeoutError):
        return "no answer in time; is the worker's event loop blocked, or the address wrong?"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the worker closed the connection; it may be shutting down"
    if isinstance(error, aiohttp.InvalidURL):
        return "not a valid URL; use http://HOST:PORT"
    return f"{type(error).__name__}; check the address and port"


async def fetch_snapshot(
    session: aiohttp.ClientSession, url: str, *, timeout: float = FETCH_TIMEOUT
) -> dict[str, Any]:
    """GET `<url>/snapshot` and return its JSON object, or raise SnapshotError."""
    base = normalize_url(url)
    try:
        async with asyncio.timeout(timeout):
            async with session.get(f"{base}/snapshot") as response:
                if response.status != 200:
                    raise SnapshotError(
                        base,
                        f"HTTP {response.status} for /snapshot; "
                        "is this an OpenRTC operations endpoint?",
                    )
                text = await response.text()
    except SnapshotError:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise SnapshotError(base, _reason(e)) from None
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "deployment_version" not in body:
        raise SnapshotError(
            base, "the answer is not an OpenRTC snapshot; is this an operations endpoint?"
        )
    return body


async def fetch_one(url: str, *, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """Fetch one worker's snapshot with a session of its own."""
    async with aiohttp.ClientSession() as session:
        return await fetch_snapshot(session, url, timeout=timeout)


async def fetch_many(
    urls: Sequence[str], *, timeout: float = FETCH_TIMEOUT
) -> list[dict[str, Any] | SnapshotError]:
    """Fetch every URL at once; each result is a snapshot or the error for that URL."""

    async def one(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | SnapshotError:
        try:
            return await fetch_snapshot(session, url, timeout=timeout)
        except SnapshotError as e:
            return e

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(one(session, url) for url in urls)))
