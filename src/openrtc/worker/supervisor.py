"""`openrtc start --processes N`: N worker processes, one parent that supervises them.

One event loop tops out near 1.4 cores, so a box with more cores runs one worker per
loop. Every child is a whole worker as `openrtc start` runs it (its own pool, admission,
lifespan and drain) that registers with the server on its own. What they share:

- the models: every child is forked from one fork server that loaded Silero and the
  end-of-turn model before the first fork (`preload.py`), so they share one copy of
  them, copy-on-write; the fork server is started from a clean interpreter, so no thread
  or event loop of the parent is ever forked;
- one parent, which serves the operations endpoint for all of them
  (`ops.processes_http`; each child serves its own on a private loopback port),
  forwards SIGTERM/SIGINT (the first drains every child, a second cuts their calls),
  restarts a child that died while the others keep their calls, and exits with the
  worst exit code of its children (0: every child drained cleanly; 3: one cut calls).

A child that cannot start (bad agents, exit code 2) stops the whole worker; a child that
drained because the manifest dropped this version takes its siblings with it; any other
exit is restarted, after a pause that doubles while children keep dying young.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from ..audit import AuditLog
from ..config import PoolConfig
from ..errors import ConfigError, OpenRTCError
from ..ops.processes_http import ChildView, ProcessesEndpoint
from . import event_loop
from .lifespan import EXIT_FAILED, EXIT_OK, HANDLED_SIGNALS, Lifespan, capture_signals

logger = logging.getLogger("openrtc.supervisor")

EXIT_USAGE = 2
"""A child could not start: the agents or settings are wrong (restarting cannot help)."""
YOUNG_S = 10.0
"""A child that dies younger than this is restarted after a pause that doubles each time."""
MAX_PAUSE_S = 30.0
TICK_S = 0.2


@dataclass(frozen=True)
class ChildSpec:
    """What one worker process needs to build and run its pool (sent to it pickled)."""

    index: int
    config: PoolConfig
    agents_dir: Path
    url: str | None
    api_key: str | None
    api_secret: str | None = field(repr=False)
    log_setup: Callable[[], None] | None = None


def numbered(path: Path | None, index: int) -> Path | None:
    """`audit.jsonl` -> `audit.1.jsonl`: a file one process may hold at a time, per child."""
    if path is None:
        return None
    return path.with_name(f"{path.stem}.{index}{path.suffix}")


def child_config(config: PoolConfig, index: int) -> PoolConfig:
    """A child's settings: a private loopback endpoint and its own audit and metrics files."""
    ops = dataclasses.replace(
        config.ops,
        host="127.0.0.1",
        port=0,
        metrics_jsonl=numbered(config.ops.metrics_jsonl, index),
    )
    audit = dataclasses.replace(config.audit, path=numbered(config.audit.path, index))
    runtime = dataclasses.replace(
        config.runtime, processes=1, cpu_sharing=config.runtime.process_count
    )
    return dataclasses.replace(config, ops=ops, audit=audit, runtime=runtime)


# --- the child ------------------------------------------------------------------------------
def run_child(spec: ChildSpec, report: Connection) -> None:
    """The body of one worker process; its exit code is the worker's."""
    # A terminal's Ctrl-C reaches the parent alone, which forwards one drain to each child.
    os.setpgid(0, 0)
    early: list[signal.Signals] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        early.append(signal.Signals(signum))

    for sig in HANDLED_SIGNALS:
        signal.signal(sig, remember)
    if spec.log_setup is not None:
        spec.log_setup()
    code = event_loop.run(_serve_child(spec, report, early), spec.config.runtime)
    sys.exit(code)


async def _serve_child(spec: ChildSpec, report: Connection, early: list[signal.Signals]) -> int:
    from ..pool import AgentPool
    from .server import PoolServer

    try:
        pool = AgentPool(config=spec.config)
        pool.discover(spec.agents_dir)
        server = PoolServer(pool, ws_url=spec.url, api_key=spec.api_key, api_secret=spec.api_secret)
    except OpenRTCError as e:
        logger.error("process %d cannot start: %s", spec.index, e)
        return EXIT_USAGE
    lifespan = Lifespan(pool, server)
    with capture_signals(asyncio.get_running_loop(), lifespan.on_signal):
        for count, sig in enumerate(early, 1):
            lifespan.on_signal(sig, count)
        task = asyncio.create_task(lifespan.run())
        watch = asyncio.create_task(_report_and_watch(lifespan, task, report))
        try:
            code = await task
        finally:
            watch.cancel()
        drain = pool.drain_request
        with contextlib.suppress(OSError):
            report.send({"drained_by": drain.actor if drain else None, "code": code})
        return code


async def _report_and_watch(
    lifespan: Lifespan, task: asyncio.Task[int], report: Connection
) -> None:
    """Tell the parent where this child's endpoint is; drain if the parent is gone."""
    while lifespan.ops is not None and lifespan.ops.port == 0 and not task.done():
        await asyncio.sleep(0.05)
    port = lifespan.ops.port if lifespan.ops is not None else None
    with contextlib.suppress(OSError):
        report.send({"pid": os.getpid(), "ops_port": port})
    # Only the parent holds the other end of this pipe: end of file means it is gone.
    while True:
        await asyncio.sleep(1.0)
        try:
            if report.poll():
                report.recv()
        except (EOFError, OSError):
            break
    logger.warning("the supervising process is gone: draining")
    lifespan.pool.begin_drain(reason="supervisor gone", actor="supervisor")


# --- the parent -----------------------------------------------------------------------------
@dataclass
class Child:
    """The parent's record of one worker slot (its process changes on a restart)."""

    index: int
    process: BaseProcess | None = None
    conn: Connection | None = None
    pid: int | None = None
    ops_port: int | None = None
    started_at: float = 0.0
    restarts: int = 0
    pause: float = 0.5
    restart_at: float | None = None
    code: int | None = None
    drained_by: str | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.code is None

    def view(self) -> ChildView:
        url = f"http://127.0.0.1:{self.ops_port}" if self.ops_port and self.alive else None
        state = "running" if url else ("starting" if self.alive else "exited")
        return ChildView(self.index, self.pid, url, self.restarts, state, self.code)


def exit_code_of(process: BaseProcess) -> int:
    code = process.exitcode
    return EXIT_FAILED if code is None or code < 0 else code


class Supervisor:
    """Starts, watches, restarts and drains the worker processes; returns the exit code."""

    def __init__(
        self,
        config: PoolConfig,
        make_spec: Callable[[int], ChildSpec],
        *,
        audit: AuditLog,
        admin_token: str | None = None,
    ) -> None:
        self.config = config
        self.count = config.runtime.process_count
        self.make_spec = make_spec
        self.audit = audit
        self.children = [Child(i) for i in range(1, self.count + 1)]
        self.draining = False
        self.fatal: int | None = None
        self._wake = asyncio.Event()
        self._context: Any = multiprocessing.get_context("forkserver")
        preload = "preload" if config.runtime.prewarm_models else "models"
        self._context.set_forkserver_preload([f"{__package__}.{preload}"])
        self.endpoint: ProcessesEndpoint | None = None
        if config.ops.port is not None:
            self.endpoint = ProcessesEndpoint(
                self.views,
                host=config.ops.host,
                port=config.ops.port,
                admin_token=admin_token,
                on_drain=self.begin_drain,
                draining=lambda: self.draining,
                info=self.info,
            )

    def views(self) -> list[ChildView]:
        return [c.view() for c in self.children]

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "processes": self.count,
            "draining": self.draining,
            "deployment_version": self.config.deployment.version,
        }

    # --- signals and drain --------------------------------------------------------------------
    def on_signal(self, sig: signal.Signals, count: int) -> None:
        if count == 1:
            logger.info("%s received: draining %d processes", sig.name, self.count)
            self.begin_drain(sig.name, actor="signal")
        else:
            logger.warning("%s received again: cutting live calls in every process", sig.name)
            self._signal_children()

    def begin_drain(self, reason: str, actor: str = "supervisor") -> None:
        """Drain every child once: each gets one SIGTERM (a second one would cut calls)."""
        if self.draining:
            return
        self.draining = True
        self.audit.emit(
            "deployment.drain_requested",
            actor=actor,
            target=f"supervisor-{os.getpid()}",
            reason=reason,
            processes=self.count,
        )
        self._signal_children()

    def _signal_children(self) -> None:
        for child in self.children:
            if child.alive and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        self._wake.set()

    # --- running ------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        with capture_signals(loop, self.on_signal):
            try:
                if self.endpoint is not None:
                    try:
                        await self.endpoint.start()
                    except ConfigError as e:
                        logger.error("%s", e)
                        return EXIT_FAILED
                for child in self.children:
                    if not self.draining:
                        await self._start(child)
                while any(c.alive or c.restart_at is not None for c in self.children):
                    await self._tick()
            finally:
                for child in self.children:
                    if child.alive and child.process is not None:
                        child.process.kill()
                if self.endpoint is not None:
                    await self.endpoint.aclose()
        return self.exit_code()

    def exit_code(self) -> int:
        if self.fatal is not None:
            return self.fatal
        return max((c.code or EXIT_OK for c in self.children), default=EXIT_OK)

    async def _start(self, child: Child) -> None:
        reader, writer = self._context.Pipe()  # duplex: the child sees the parent's end close
        process = self._context.Process(
            target=run_child,
            args=(self.make_spec(child.index), writer),
            name=f"openrtc-worker-{child.index}",
        )
        # the first start waits for the fork server to import livekit and load the models
        await asyncio.to_thread(process.start)
        writer.close()
        child.process, child.conn, child.pid = process, reader, process.pid
        child.ops_port, child.code, child.drained_by, child.restart_at = None, None, None, None
        child.started_at = time.monotonic()
        logger.info("process %d started (pid %s)", child.index, process.pid)
        if self.draining and child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)

    async def _tick(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), TICK_S)
        self._wake.clear()
        for child in self.children:
            self._read_reports(child)
            if child.alive and child.process is not None and child.process.exitcode is not None:
                self._read_reports(child)
                self._exited(child)
            if child.restart_at is not None and time.monotonic() >= child.restart_at:
                if self.draining:
                    child.restart_at = None
                else:
                    await self._start(child)

    def _read_reports(self, child: Child) -> None:
        conn = child.conn
        if conn is None:
            return
        try:
            while conn.poll():
                message = conn.recv()
                if "ops_port" in message:
                    child.ops_port = message["ops_port"]
                    logger.info("process %d (pid %s) is up", child.index, message.get("pid"))
                if "drained_by" in message:
                    child.drained_by = message["drained_by"]
        except (EOFError, OSError):
            conn.close()
            child.conn = None

    def _exited(self, child: Child) -> None:
        assert child.process is not None
        raw = child.process.exitcode
        child.code = exit_code_of(child.process)
        if child.conn is not None:
            child.conn.close()
            child.conn = None
        lived = time.monotonic() - child.started_at
        how = f"signal {-raw}" if raw is not None and raw < 0 else f"exit code {raw}"
        if self.draining:
            logger.info("process %d (pid %s) ended: %s", child.index, child.pid, how)
            return
        if child.code == EXIT_USAGE and child.ops_port is None:
            logger.error("process %d cannot start (%s): stopping every process", child.index, how)
            self.fatal = EXIT_USAGE
            self.begin_drain("a process cannot start")
            return
        if child.drained_by == "manifest":
            logger.info("process %d drained: this version left the manifest", child.index)
            self.begin_drain("version left the manifest", actor="manifest")
            return
        child.pause = min(MAX_PAUSE_S, child.pause * 2) if lived < YOUNG_S else 0.5
        child.restart_at = time.monotonic() + child.pause
        child.restarts += 1
        logger.warning(
            "process %d (pid %s) ended (%s) after %.1fs; restarting it in %.1fs",
            child.index,
            child.pid,
            how,
            lived,
            child.pause,
        )
        self.audit.emit(
            "worker.process_restarted",
            target=f"supervisor-{os.getpid()}",
            result="restarting",
            process=child.index,
            pid=child.pid,
            exit=how,
            lived_s=round(lived, 2),
            restarts=child.restarts,
        )
