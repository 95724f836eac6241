"""The per-worker HTTP endpoint: health, readiness, metrics, snapshot, drain.

Bound to 127.0.0.1 unless configured otherwise. POST /drain needs the admin token
(OPENRTC_ADMIN_TOKEN or OPENRTC_ADMIN_TOKEN_FILE); without one configured it is refused.
"""

from __future__ import annotations

import asyncio
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
from .endpoint import Endpoint
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


class OpsServer(Endpoint):
    """The endpoint of one worker process: it answers from its own pool."""

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
        super().__init__(host=host, port=port, admin_token=admin_token)
        self.pool = pool
        self.lag = lag
        self.headroom = headroom
        self.hang_after = HANG_AFTER_S
        self.pool_metrics = PoolMetrics(pool, lag, headroom)
        self.hot_reload: Callable[[], dict[str, Any]] | None = None
        """The hot reloader's status, shown under "hot_reload" in /snapshot when set."""
        self.snapshot_read = asyncio.Event()
        """Set at each /snapshot answer; cleared by whoever waits for the next one."""
        self.last_snapshot_at: float | None = None
        """When /snapshot last answered (monotonic): someone (fleet, top) is watching."""
        if call_stats.enabled():
            call_stats.install_collector()

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

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.pool_metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def snapshot(self, request: web.Request) -> web.Response:
        body = self.pool.runtime_snapshot().to_dict()
        body["event_loop_lag_ms"] = {
            "p50": round(self.lag.percentile(0.5) * 1000, 2),
            "p99": round(self.lag.percentile(0.99) * 1000, 2),
        }
        body["ops_url"] = self.url
        body["memory"] = await asyncio.to_thread(process_memory)  # a /proc walk: off the loop
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

    def begin_drain(self, actor: str) -> dict[str, Any]:
        self.pool.begin_drain(reason="POST /drain", actor=actor)
        return {"state": self.pool.admission_state().value}

    def drain_refused(self, request: web.Request) -> None:
        """Audited under the bounded-volume rule (one record, then a count per interval
        for the same peer)."""
        peer = request.remote or ""
        record = self.pool.audit_log.emit_refusal(
            "ops.drain_refused", reason="bad admin token", source=peer, actor=peer
        )
        if record is not None:
            logger.warning("POST /drain refused: bad or missing admin token (from %s)", peer)
