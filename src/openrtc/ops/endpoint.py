"""What every operations endpoint shares: the routes, binding its port, POST /drain's
credential check. A single worker (`ops.http.OpsServer`) and the parent of a
multi-process worker (`ops.processes_http.ProcessesEndpoint`) answer the same five
routes; only what each route says differs.
"""

from __future__ import annotations

import errno
import hmac
import logging
from abc import ABC, abstractmethod
from typing import Any

from aiohttp import web

from ..errors import ConfigError

logger = logging.getLogger("openrtc.http")

MAX_CREDENTIAL_BYTES = 4096
"""A longer Authorization header is refused unread."""
ROUTES = "/healthz /readyz /metrics /snapshot"


def admin_authorized(request: web.Request, admin_token: str) -> bool:
    """Compare the raw Authorization bytes with `Bearer <token>` in constant time; a
    missing, oversized or malformed (non-UTF-8) credential is a no, never an error."""
    given = b""
    for name, value in request.raw_headers:
        if name.lower() == b"authorization":
            given = value
            break
    if len(given) > MAX_CREDENTIAL_BYTES:
        return False
    return hmac.compare_digest(given, f"Bearer {admin_token}".encode())


def port_problem(host: str, port: int, error: OSError) -> str:
    where = f"cannot listen on {host}:{port} for the operations endpoint (--http-port, "
    where += f"OPENRTC_HTTP_PORT): {error.strerror or error}"
    if error.errno == errno.EADDRINUSE:
        where += "; another worker on this host may hold it: pass --http-port 0 for any free port"
    return where


class Endpoint(ABC):
    """/healthz, /readyz, /metrics, /snapshot and POST /drain on one loopback-bound port."""

    scope = ""
    """Said after the URL when the endpoint starts (what it covers)."""

    def __init__(self, *, host: str, port: int, admin_token: str | None) -> None:
        self.host = host
        self.port = port
        self.admin_token = admin_token
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                web.get("/snapshot", self.snapshot),
                web.post("/drain", self.drain),
            ]
        )
        self.app = app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(port_problem(self.host, self.port, e)) from None
        picked = self.port == 0
        if picked:
            self.port = int(self._runner.addresses[0][1])
        logger.info(
            "operations endpoint%s on %s (%s)%s",
            self.scope,
            self.url,
            ROUTES,
            f"; port {self.port} picked for --http-port 0" if picked else "",
        )

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drain(self, request: web.Request) -> web.Response:
        """POST /drain: off without a configured token, 401 for any other credential."""
        if self.admin_token is None:
            return web.json_response(
                {"error": "drain over HTTP is off: set OPENRTC_ADMIN_TOKEN to enable it"},
                status=403,
            )
        if not admin_authorized(request, self.admin_token):
            self.drain_refused(request)
            return web.json_response({"error": "a valid admin token is required"}, status=401)
        actor = request.headers.get("X-OpenRTC-Actor", "http")[:64]
        return web.json_response({"draining": True, **self.begin_drain(actor)}, status=202)

    @abstractmethod
    def begin_drain(self, actor: str) -> dict[str, Any]:
        """Record the drain; returns what the 202 answer adds to `draining: true`."""

    @abstractmethod
    def drain_refused(self, request: web.Request) -> None:
        """A bad or missing credential was given: audit or log it (bounded)."""

    @abstractmethod
    async def healthz(self, request: web.Request) -> web.Response: ...

    @abstractmethod
    async def readyz(self, request: web.Request) -> web.Response: ...

    @abstractmethod
    async def metrics(self, request: web.Request) -> web.Response: ...

    @abstractmethod
    async def snapshot(self, request: web.Request) -> web.Response: ...
