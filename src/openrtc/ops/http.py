"""The per-worker HTTP endpoint: health, readiness, metrics, snapshot, drain.

Bound to 127.0.0.1 unless configured otherwise. POST /drain needs the admin token
(OPENRTC_ADMIN_TOKEN or OPENRTC_ADMIN_TOKEN_FILE); without one configured it is refused.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import ConfigError
from ..lifecycle import WorkerState
from . import call_stats
from .memory import process_memory
from .metrics import PoolMetrics

if TYPE_CHECKING:
    from ..pool import AgentPool
    from .headroom import Headroom
    from .loop_lag import LoopLagMonitor

logger = logging.getLogger("openrtc.http")

HANG_AFTER_S = 10.0
"""/healthz fails when the loop-lag monitor has not run for this many seconds: the loop
is hung (blocked, or the monitor died), not merely busy."""


MAX_CREDENTIAL_BYTES = 4096


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


"""A longer Authorization header is refused unread."""


def load_admin_token() -> str | None:
    """The POST /drain token from OPENRTC_ADMIN_TOKEN_FILE or OPENRTC_ADMIN_TOKEN;
    a file that is set but unreadable or empty is a ConfigError naming the variable."""
    token = os.environ.get("OPENRTC_ADMIN_TOKEN")
    path = os.environ.get("OPENRTC_ADMIN_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"cannot read OPENRTC_ADMIN_TOKEN_FILE {path}: {why}") from None
        if not token:
            raise ConfigError(f"OPENRTC_ADMIN_TOKEN_FILE {path} is empty")
    return token or None


def port_problem(host: str, port: int, error: OSError) -> str:
    where = f"cannot listen on {host}:{port} for the operations endpoint (--http-port, "
    where += f"OPENRTC_HTTP_PORT): {error.strerror or error}"
    if error.errno == errno.EADDRINUSE:
        where += "; another worker on this host may hold it: pass --http-port 0 for any free port"
    return where


class OpsServer:
    def __init__(
        self,
        pool: AgentPool,
        lag: LoopLagMonitor,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_token: str | None = None,
        headroom: Headroom | None = None,
    ) -> None:
        self.pool = pool
        self.lag = lag
        self.headroom = headroom
        self.host = host
        self.port = port
        self.admin_token = admin_token
        self.hang_after = HANG_AFTER_S
        self.metrics = PoolMetrics(pool, lag, headroom)
        self.hot_reload: Callable[[], dict[str, Any]] | None = None
        """The hot reloader's status, shown under "hot_reload" in /snapshot when set."""
        self.snapshot_read = asyncio.Event()
        """Set at each /snapshot answer; cleared by whoever waits for the next one."""
        self.last_snapshot_at: float | None = None
        """When /snapshot last answered (monotonic): someone (fleet, top) is watching."""
        if call_stats.enabled():
            call_stats.install_collector()
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics_handler),
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
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(port_problem(self.host, self.port, e)) from None
        picked = self.port == 0
        if picked:
            self.port = int(self._runner.addresses[0][1])
        logger.info(
            "operations endpoint on %s (/healthz /readyz /metrics /snapshot)%s",
            self.url,
            f"; port {self.port} picked for --http-port 0" if picked else "",
        )

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: fails only on a hung process, never on a busy one.

        A worker full of calls runs its loop late (lag in the seconds) and must be left
        alone: restarting it would cut every call. A loop that is blocked cannot answer
        at all, so the probe's own timeout catches it; an answer given while the lag
        monitor has not ticked for `hang_after` seconds (the loop just woke from a long
        block, or the monitor is gone) is a 503.
        """
        stalled = self.lag.stalled_for()
        if stalled > self.hang_after:
            return web.json_response(
                {"ok": False, "reason": f"event loop has not ticked for {stalled:.1f}s"},
                status=503,
            )
        return web.json_response(
            {
                "ok": True,
                "state": self.pool.state.value,
                "loop_lag_p99_s": round(self.lag.percentile(0.99), 3),
            }
        )

    async def readyz(self, request: web.Request) -> web.Response:
        state = self.pool.admission_state()
        down = self.pool.dispatch_down
        if down is not None and not state.is_draining and state is not WorkerState.STOPPED:
            body = {
                "ready": False,
                "state": state.value,
                "reason": "dispatch_unreachable",
                "detail": down,
            }
            return web.json_response(body, status=503)
        if state is WorkerState.ACCEPTING:
            return web.json_response({"ready": True, "state": state.value})
        reason = {
            WorkerState.STARTING: "not registered with the server yet",
            WorkerState.NOT_MEMBER: "this version is not in the active manifest",
            WorkerState.DRAINING: "draining",
            WorkerState.DRAINED: "drained",
            WorkerState.STOPPED: "stopped",
        }.get(state, state.value)
        if state is WorkerState.NOT_MEMBER and self.pool.membership_reason == "manifest_expired":
            reason = "manifest_expired"
        return web.json_response(
            {"ready": False, "state": state.value, "reason": reason}, status=503
        )

    async def metrics_handler(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def snapshot(self, request: web.Request) -> web.Response:
        body = self.pool.runtime_snapshot().to_dict()
        body["event_loop_lag_ms"] = {
            "p50": round(self.lag.percentile(0.5) * 1000, 2),
            "p99": round(self.lag.percentile(0.99) * 1000, 2),
        }
        body["ops_url"] = self.url
        body["memory"] = process_memory()
        body["load"] = (
            self.headroom.to_dict()
            if self.headroom is not None
            else {"reported": round(self.pool.exact_load(), 3)}
        )
        if call_stats.enabled():
            body["call_stats"] = call_stats.snapshot()
        if self.hot_reload is not None:
            body["hot_reload"] = self.hot_reload()
        self.snapshot_read.set()
        self.last_snapshot_at = time.monotonic()
        body["audit"] = self._audit_status()
        return web.Response(text=json.dumps(body), content_type="application/json")

    def _audit_status(self) -> dict[str, object]:
        """Audit sink failures by sink and reason, and each outlet's state (spool size)."""
        log = self.pool.audit_log
        failures: dict[str, dict[str, int]] = {}
        for (sink, reason), n in sorted(log.failures.items()):
            failures.setdefault(sink, {})[reason] = n
        status: dict[str, object] = {"sink_failures": failures}
        if self.pool.audit_sinks is not None:
            status.update(self.pool.audit_sinks.status())
        return status

    async def drain(self, request: web.Request) -> web.Response:
        if self.admin_token is None:
            return web.json_response(
                {"error": "drain over HTTP is off: set OPENRTC_ADMIN_TOKEN to enable it"},
                status=403,
            )
        if not self._authorized(request):
            self._audit_refused(request)
            return web.json_response({"error": "a valid admin token is required"}, status=401)
        actor = request.headers.get("X-OpenRTC-Actor", "http")[:64]
        self.pool.begin_drain(reason="POST /drain", actor=actor)
        state = self.pool.admission_state().value
        return web.json_response({"draining": True, "state": state}, status=202)

    def _authorized(self, request: web.Request) -> bool:
        assert self.admin_token is not None
        return admin_authorized(request, self.admin_token)

    def _audit_refused(self, request: web.Request) -> None:
        """A failed drain attempt: audited under the bounded-volume rule (one record, then
        a count per interval for the same peer)."""
        peer = request.remote or ""
        record = self.pool.audit_log.emit_refusal(
            "ops.drain_refused", reason="bad admin token", source=peer, actor=peer
        )
        if record is not None:
            logger.warning("POST /drain refused: bad or missing admin token (from %s)", peer)
