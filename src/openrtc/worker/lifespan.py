"""A worker's whole life, top to bottom: start, serve, and what happens on SIGTERM.

1. start: load the shared models, connect and register; the pool goes to accepting
   (or not_member, when a manifest does not name our version) and `started` is set.
2. serve until a drain is requested: `pool.begin_drain()`, POST /drain, a manifest that
   drops our version (when configured to), or SIGTERM/SIGINT. Every one of them only
   records the request on the pool; this module alone moves the lifecycle
   (`_apply_requests`), on the loop. The signal handler runs on the loop, via the loop's
   own signal plumbing, so it never raises into a running call, and a signal that lands
   while a call's code blocks the loop is handled as soon as the loop runs again.
3. drain: the server is told we are full at once and every new offer is refused
   (`worker.rejected`, reason `draining`); in-flight calls run to hang-up.
   A lost dispatch link is no reason to cut calls: the server records it on the pool
   (`/readyz` answers 503 `dispatch_unreachable`, offers are refused) and keeps retrying;
   this module gives up only once the link stayed down for `--dispatch-retry-budget`
   with no call live, and then exits EXIT_FAILED so the orchestrator restarts it.
4. exit: when the last call ends, the final job statuses are flushed, the connection is
   closed cleanly, the observers' pending `on_session_end` calls are awaited (at most
   `observer_flush_timeout`; any abandoned is audited) and `serve()` returns EXIT_OK.
   If `drain_timeout` passes first, or a second signal arrives, the calls still live
   are closed gracefully (sessions closed, shutdown callbacks run, JS_CANCELLED sent),
   `deployment.drain_timeout` is audited with the cut job ids, and `serve()` returns
   EXIT_DRAIN_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import log_context
from ..config import OpsEndpoint
from ..deploy.follower import manifest_secrets, membership_watcher
from ..errors import ConfigError
from ..lifecycle import WorkerState
from ..ops import self_protection
from ..ops.endpoint import port_problem
from ..ops.headroom import Headroom
from ..ops.http import OpsServer, load_admin_token
from ..ops.jsonl import MetricsJsonl
from ..ops.loop_lag import LoopLagMonitor
from .models import shared_models, shared_turn_detector

if TYPE_CHECKING:
    from ..pool import AgentPool
    from .server import PoolServer

logger = logging.getLogger("openrtc.lifespan")

EXIT_OK = 0
"""Drained: every call ended on its own, or the worker stopped with none live."""
EXIT_FAILED = 1
"""The worker could not start or lost its server for good."""
EXIT_DRAIN_TIMEOUT = 3
"""drain_timeout passed (or a second signal came): live calls were cut, CANCELLED."""

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

REPORT_DRAINED_S = 2.0
"""A watched worker (its /snapshot read lately) waits at most this long before exiting
for one more read, so its watcher sees `drained` rather than a worker gone with calls."""
WATCHED_WITHIN_S = 10.0


@contextlib.contextmanager
def capture_signals(
    loop: asyncio.AbstractEventLoop, on_signal: Callable[[signal.Signals, int], None]
) -> Iterator[None]:
    """Route SIGTERM/SIGINT to on_signal(signal, count) on the loop; restore on exit."""
    counts: dict[signal.Signals, int] = {}

    def handler(sig: signal.Signals) -> None:
        counts[sig] = sum(counts.values()) + 1
        on_signal(sig, counts[sig])

    installed = []
    for sig in HANDLED_SIGNALS:
        try:
            loop.add_signal_handler(sig, handler, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            logger.debug("cannot capture %s here (not the main thread)", sig.name)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


class Lifespan:
    """Runs one PoolServer from start to exit and returns the process exit code."""

    def __init__(
        self,
        pool: AgentPool,
        server: PoolServer,
        *,
        devmode: bool = False,
        ops: OpsEndpoint | None = None,
    ) -> None:
        self.pool = pool
        self.server = server
        self.devmode = devmode
        self.ops_config = pool.config.ops if ops is None else ops
        self.started = asyncio.Event()
        """Set once the worker registered and the lifecycle left `starting`."""
        self._force = asyncio.Event()
        self._drain_started = asyncio.Event()
        self._gave_up = asyncio.Event()
        self._outage: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.cut_jobs: list[str] = []
        self.lag = LoopLagMonitor()
        self.headroom = Headroom(pool, self.lag)
        self.watcher: Any = None
        self.jsonl: MetricsJsonl | None = None
        self.reloader: Any = None
        self.protection: Any = None
        self.ops: OpsServer | None = None
        if self.ops_config.port is not None:
            self.ops = OpsServer(
                pool,
                self.lag,
                host=self.ops_config.host,
                port=self.ops_config.port,
                admin_token=load_admin_token(),
                headroom=self.headroom,
            )
        pool.add_request_listener(self._wake)

    def on_signal(self, sig: signal.Signals, count: int) -> None:
        if count == 1:
            logger.info("%s received: draining (send it again to cut live calls)", sig.name)
            self.pool.begin_drain(reason=sig.name, actor="signal")
        else:
            logger.warning("%s received again: cutting live calls now", sig.name)
            self.pool.begin_drain(reason=sig.name, actor="signal")
            self._force.set()

    def force(self) -> None:
        """Take the drain-timeout path now (a second signal does this)."""
        self._force.set()

    # --- the one place the lifecycle moves -----------------------------------------------
    def _wake(self) -> None:
        """A request was recorded (any thread, or a signal handler): apply it on the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._apply_requests)

    def _apply_requests(self) -> None:
        """Carry out what was recorded: registration and membership first, then a drain."""
        pool, lifecycle = self.pool, self.pool.lifecycle
        state = lifecycle.state
        if pool.dispatch_down is not None and (self._outage is None or self._outage.done()):
            self._outage = asyncio.ensure_future(self._watch_outage())
        if pool.registered:
            if pool.member is False and state in (WorkerState.STARTING, WorkerState.ACCEPTING):
                reason = pool.membership_reason or "not in manifest"
                lifecycle.move(WorkerState.NOT_MEMBER, reason=reason, actor="manifest")
            elif state is WorkerState.STARTING:
                lifecycle.move(WorkerState.ACCEPTING, reason="registered")
            elif state is WorkerState.NOT_MEMBER and pool.member:
                reason = pool.membership_reason
                lifecycle.move(WorkerState.ACCEPTING, reason=reason, actor="manifest")
        drain = pool.drain_request
        if drain is not None:
            if lifecycle.can_move(WorkerState.DRAINING):
                lifecycle.move(WorkerState.DRAINING, reason=drain.reason, actor=drain.actor)
            if lifecycle.state is not WorkerState.STOPPED:
                self._drain_started.set()
        if lifecycle.state is not WorkerState.STARTING:
            self.started.set()

    # --- start, serve, drain, exit ---------------------------------------------------------
    async def run(self, *, ready: Callable[[], Awaitable[None]] | None = None) -> int:
        pool = self.pool
        self._loop = asyncio.get_running_loop()
        log_context.bind(deployment_version=pool.deployment_version)
        run_task: asyncio.Task[None] | None = None
        drain_task = asyncio.create_task(self._drain_started.wait())
        gave_up = asyncio.create_task(self._gave_up.wait())
        code = EXIT_FAILED
        try:
            self._apply_requests()
            await self._start()
            run_task = asyncio.create_task(self.server.run(devmode=self.devmode), name="server")
            done, _ = await asyncio.wait(
                {run_task, drain_task, gave_up}, return_when=asyncio.FIRST_COMPLETED
            )
            if run_task in done:
                code = self._server_ended(run_task)
            elif drain_task in done:
                code = await self._drain()
            else:
                code = EXIT_FAILED
        finally:
            drain_task.cancel()
            gave_up.cancel()
            if self._outage is not None:
                self._outage.cancel()
            await self._close()
            if run_task is not None and not run_task.done():
                run_task.cancel()
            if run_task is not None:
                with contextlib.suppress(BaseException):
                    await run_task
            if pool.lifecycle.can_move(WorkerState.STOPPED):
                pool.lifecycle.move(WorkerState.STOPPED, reason="exited")
            # the audit file is written by its own thread: wait for it off the loop
            await asyncio.to_thread(pool.audit_log.flush)
            await self._flush_audit()
        return code

    async def _flush_audit(self) -> None:
        """Deliver the audit outlets' backlog (the spool) up to the flush deadline, last of
        all so that `worker.stopped` goes too; say how it went."""
        sinks = self.pool.audit_sinks
        if sinks is None:
            return
        timeout = self.pool.config.audit.flush_timeout
        logger.info("flushing audit sinks (deadline %gs)", timeout)
        for report in await asyncio.to_thread(sinks.close, timeout):
            log = logger.info if report.delivered else logger.error
            log(
                "audit sink %s flushed in %.2fs of %gs: %s",
                report.sink,
                report.seconds,
                timeout,
                report.detail,
            )

    async def _start(self) -> None:
        """Everything a worker needs before it registers; undone by `_close()`."""
        pool = self.pool
        self.lag.start()
        self.headroom.start()
        if self.ops_config.metrics_jsonl is not None:
            self.jsonl = MetricsJsonl(
                pool,
                self.ops_config.metrics_jsonl,
                self.lag,
                interval=self.ops_config.metrics_jsonl_interval,
            )
            self.jsonl.start()
        self.protection = self_protection.start(pool)
        if self.ops is not None:
            await self.ops.start()
        self.watcher = membership_watcher(pool)
        if self.watcher is not None:
            await self.watcher.start()
            if self.watcher.current is None and pool.member is None:
                # fail closed: a worker that cannot verify a manifest takes no calls
                pool.set_membership(False, reason="no valid manifest yet")
        if pool.config.runtime.prewarm_models:
            await asyncio.to_thread(shared_models)
            if pool.config.runtime.shared_turn_detector:
                # checks livekit's turn stream now: a moved internal stops the start, loudly
                await asyncio.to_thread(shared_turn_detector)
        if pool.config.runtime.hot_reload:
            from ..reload import HotReloader

            self.reloader = HotReloader(pool)
            await self.reloader.start()
            if self.ops is not None:
                self.ops.hot_reload = self.reloader.status

    def _server_ended(self, run_task: asyncio.Task[None]) -> int:
        exc = None if run_task.cancelled() else run_task.exception()
        if exc is not None:
            logger.error("worker stopped: %s", exc)
            return EXIT_FAILED
        return EXIT_OK

    async def _drain(self) -> int:
        self.server.mark_draining()
        await self.server.push_worker_status()
        started = time.monotonic()
        deadline = self.pool.drain_timeout
        idle = asyncio.create_task(self._until_idle())
        force = asyncio.create_task(self._force.wait())
        try:
            done, _ = await asyncio.wait(
                {idle, force}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            force.cancel()
        nothing_live = self.pool.admitted == 0 and not self.server.job_executors()
        if idle in done or nothing_live:
            self.pool.lifecycle.move(
                WorkerState.DRAINED,
                reason=f"last call ended after {time.monotonic() - started:.2f}s",
            )
            return EXIT_OK
        idle.cancel()
        self.cut_jobs = await self.server.cut_live_calls("drain_timeout")
        why = "second signal" if self._force.is_set() else f"drain_timeout {deadline:g}s"
        logger.warning("drain cut %d live call(s) (%s)", len(self.cut_jobs), why)
        self.pool.audit_log.emit(
            "deployment.drain_timeout",
            target=self.pool.worker_id,
            result="cut",
            cut_job_ids=self.cut_jobs,
            reason=why,
            drain_timeout=deadline,
        )
        if self.pool.lifecycle.can_move(WorkerState.DRAINED):
            self.pool.lifecycle.move(WorkerState.DRAINED, reason=f"cut {len(self.cut_jobs)}")
        return EXIT_DRAIN_TIMEOUT

    def _nothing_live(self) -> bool:
        return self.pool.admitted == 0 and not self.server.job_executors()

    async def _watch_outage(self) -> None:
        """While the dispatch link is down: give up once it has been down for the retry
        budget and no call is live (calls still live keep the worker up until they end)."""
        pool = self.pool
        budget = pool.config.dispatch.retry_budget
        while pool.dispatch_down is not None:
            since = pool.dispatch_down_since
            down_for = 0.0 if since is None else time.monotonic() - since
            if down_for >= budget and self._nothing_live() and pool.drain_request is None:
                logger.error(
                    "dispatch server unreachable for %.0fs (--dispatch-retry-budget %gs) and no "
                    "call is live: exiting so the worker is restarted (%s)",
                    down_for,
                    budget,
                    pool.dispatch_down,
                )
                pool.audit_log.emit(
                    "dispatch.gave_up",
                    target=pool.worker_id,
                    result="exit",
                    reason=pool.dispatch_down,
                    outage_s=round(down_for, 3),
                    retry_budget=budget,
                )
                self._gave_up.set()
                return
            await asyncio.sleep(0.2)

    async def _until_idle(self) -> None:
        """No call admitted, launching or running, and no offer mid-answer."""
        while True:
            if self.pool.admitted == 0 and not self.server.job_executors():
                pending = [t for t in self.server.lifecycle_tasks() if not t.done()]
                if not pending:
                    return
                await asyncio.wait(pending, timeout=0.05)
                continue
            await asyncio.sleep(0.01)

    async def _report_drained(self, ops: OpsServer) -> None:
        """Let a watcher read `drained` once before the endpoint goes away (bounded)."""
        seen = ops.last_snapshot_at
        if self.pool.lifecycle.state is not WorkerState.DRAINED or seen is None:
            return
        if time.monotonic() - seen > WATCHED_WITHIN_S:
            return
        await _wait_for_a_read(ops, REPORT_DRAINED_S)

    async def _close(self) -> None:
        await self.server.flush_outbox()
        unreported = self.server.unreported_outcomes()
        if unreported:
            logger.warning(
                "%d call outcome(s) never reached the dispatch server: %s",
                len(unreported),
                ", ".join(f"{job} {status}" for job, status in unreported.items()),
            )
            self.pool.audit_log.emit(
                "dispatch.outcomes_unreported",
                target=self.pool.worker_id,
                result="unreported",
                outcomes=unreported,
            )
        with contextlib.suppress(Exception):
            await self.server.aclose()
        # every ended call's on_session_end reaches the observers before the process exits
        await self.pool.flush_observers()
        if self.ops is not None:
            await self._report_drained(self.ops)
            await self.ops.aclose()
        if self.watcher is not None:
            await self.watcher.aclose()
        if self.reloader is not None:
            await self.reloader.aclose()
        if self.jsonl is not None:
            await self.jsonl.aclose()
        await self.headroom.aclose()
        await self.lag.aclose()
        self.started.set()
        if self.protection is not None:
            await self.protection.aclose()


def preflight(pool: AgentPool, ops: OpsEndpoint | None = None) -> None:
    """Operator mistakes a worker would otherwise meet only after it started: each one is a
    ConfigError naming the flag or variable (the CLI prints it as one line, exit 2)."""
    ops = pool.config.ops if ops is None else ops
    if ops.port is not None:
        load_admin_token()
        if ops.port != 0:
            _check_port_free(ops.host, ops.port)
    if pool.config.deployment.manifest is not None:
        manifest_secrets(pool.config.deployment)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise ConfigError(port_problem(host, port, e)) from None


async def _wait_for_a_read(ops: OpsServer, timeout: float) -> None:
    ops.snapshot_read.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ops.snapshot_read.wait(), timeout)


async def until_started(lifespan: Lifespan, task: asyncio.Task[int]) -> bool:
    """Wait until the worker started (True) or its run ended first (False)."""
    started = asyncio.create_task(lifespan.started.wait())
    try:
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        started.cancel()
    return not task.done()


async def serve(pool: AgentPool, server: PoolServer, *, devmode: bool = False) -> int:
    """Run a worker in this process, with SIGTERM/SIGINT handled; returns the exit code."""
    lifespan = Lifespan(pool, server, devmode=devmode)
    with capture_signals(asyncio.get_running_loop(), lifespan.on_signal):
        return await lifespan.run()
