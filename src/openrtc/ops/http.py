"""The per-worker HTTP endpoint: health, readiness, metrics, snapshot, drain.

Bound to 127.0.0.1 unless configured otherwise. POST /drain needs the admin token
(OPENRTC_ADMIN_TOKEN or OPENRTC_ADMIN_TOKEN_FILE); without one configured it is refused.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

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


def load_admin_token() -> str | None:
    token = os.environ.get("OPENRTC_ADMIN_TOKEN")
    path = os.environ.get("OPENRTC_ADMIN_TOKEN_FILE")
    if path:
        token = Path(path).read_text().strip()
    return token or None


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
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        logger.info("operations endpoint on %s (/healthz /readyz /metrics /snapshot)", self.url)

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
        if state is WorkerState.ACCEPTING:
            return web.json_response({"ready": True, "state": state.value})
        reason = {
            WorkerState.STARTING: "not registered with the server yet",
            WorkerState.NOT_MEMBER: "this version is not in the active manifest",
            WorkerState.DRAINING: "draining",
            WorkerState.DRAINED: "drained",
            WorkerState.STOPPED: "stopped",
        }.get(state, state.value)
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
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def drain(self, request: web.Request) -> web.Response:
        if self.admin_token is None:
            return web.json_response(
                {"error": "drain over HTTP is off: set OPENRTC_ADMIN_TOKEN to enable it"},
                status=403,
            )
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.admin_token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response({"error": "a valid admin token is required"}, status=401)
        actor = request.headers.get("X-OpenRTC-Actor", "http")[:64]
        self.pool.begin_drain(reason="POST /drain", actor=actor)
        state = self.pool.admission_state().value
        return web.json_response({"draining": True, "state": state}, status=202)
