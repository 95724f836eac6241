"""Running each call as an asyncio task on the worker's own event loop.

livekit-agents runs a job in a process or a thread; here a job is a task with its own
JobContext (and contextvars), so every call shares the process's loaded models. The
classes duck-type livekit's job executor and process pool, so AgentServer drives them
unchanged: launch, join, termination, drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from livekit.agents import JobContext, JobProcess, utils
from livekit.agents.job import RunningJobInfo
from livekit.protocol import agent as lk_proto

from .. import _lk
from ..routing import parse_metadata
from ..sessions import Outcome
from ..simulation.room import room_for_simulated_job
from ..simulation.script import SIMULATED_CALL_KEY
from . import containment

logger = logging.getLogger("openrtc.jobs")

Entrypoint = Callable[[JobContext], Coroutine[Any, Any, None]]
PoolEvent = Literal[
    "process_created", "process_started", "process_ready", "process_closed", "process_job_launched"
]


def _room_for(info: RunningJobInfo) -> Any:
    """The job's simulated room when a simulated caller rides in its metadata, else its
    real (not yet connected) room."""
    script = parse_metadata(info.job.metadata).get(SIMULATED_CALL_KEY)
    room = room_for_simulated_job(info, script) if script is not None else None
    return room if room is not None else _lk.room_for_job(info)


class CoroutineJob:
    """One call: a task running the entrypoint, then livekit's shutdown sequence."""

    def __init__(self, *, proc: JobProcess, entrypoint: Entrypoint, close_timeout: float) -> None:
        self._id = utils.shortuuid("CJ_")
        self._proc = proc
        self._entrypoint = entrypoint
        self._close_timeout = close_timeout
        self._info: RunningJobInfo | None = None
        self._task: asyncio.Task[None] | None = None
        self._shutdown: asyncio.Future[str] | None = None
        self._user_arguments: Any = None
        self.outcome: Outcome | None = None
        self.error = ""
        self.end_reason = ""
        self.started_at = 0.0
        self._cancel_reason: str | None = None
        self._failure: str | None = None
        self._ended_cleanly = False

    # --- JobExecutor protocol -----------------------------------------------------
    @property
    def id(self) -> str:
        return self._id

    @property
    def started(self) -> bool:
        return True

    @property
    def user_arguments(self) -> Any:
        return self._user_arguments

    @user_arguments.setter
    def user_arguments(self, value: Any) -> None:
        self._user_arguments = value

    @property
    def running_job(self) -> RunningJobInfo | None:
        return self._info

    @property
    def status(self) -> _lk.ExecutorStatus:
        if self.outcome is None:
            return _lk.ExecutorStatus.RUNNING
        if self.outcome is Outcome.SUCCESS:
            return _lk.ExecutorStatus.SUCCESS
        return _lk.ExecutorStatus.FAILED

    @property
    def proto_status(self) -> int:
        return {
            None: lk_proto.JobStatus.JS_RUNNING,
            Outcome.SUCCESS: lk_proto.JobStatus.JS_SUCCESS,
            Outcome.FAILED: lk_proto.JobStatus.JS_FAILED,
            Outcome.CANCELLED: lk_proto.JobStatus.JS_CANCELLED,
        }[self.outcome]

    async def start(self) -> None:
        return None

    async def initialize(self) -> None:
        return None

    def logging_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"executor_id": self._id}
        if self._info is not None:
            extra["job_id"] = self._info.job.id
        return extra

    async def launch_job(self, info: RunningJobInfo) -> None:
        if self._info is not None:
            raise RuntimeError("a coroutine job runs exactly one call")
        self._info = info
        self.started_at = time.time()
        self._shutdown = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(info), name=f"call:{info.job.id}")

    async def join(self) -> None:
        if self._task is None:
            await asyncio.sleep(0)
            return
        await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """End the call the way a hang-up does: the session closes, callbacks run."""
        self.request_shutdown("job terminated")
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def cancel_call(self, reason: str) -> None:
        """Cut a live call (drain timeout): closed gracefully, reported CANCELLED."""
        self._cancel_reason = reason
        self.request_shutdown(reason)
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    def request_shutdown(self, reason: str) -> None:
        if self._shutdown is not None and not self._shutdown.done():
            self._shutdown.set_result(reason)

    # --- the call -------------------------------------------------------------------
    async def _run(self, info: RunningJobInfo) -> None:
        job_id = info.job.id
        # every task this call's code creates from here on is contained (see containment)
        containment.enter(job_id, self._escaped)
        try:
            # the call's own aiohttp session for provider plugins, as livekit's executors give
            async with utils.http_context.open():
                await self._run_call(info)
        except asyncio.CancelledError:
            self._fail("the call's task was cancelled before it ended")
            raise
        except BaseException as e:
            # contained: whatever the call raised, only this call ends
            self._fail(f"the call could not run: {containment.describe(e)}")
            logger.error("call could not run", exc_info=e, extra=self.logging_extra())
        finally:
            containment.leave(job_id)
            self._settle()

    async def _run_call(self, info: RunningJobInfo) -> None:
        assert self._shutdown is not None
        room = _room_for(info)
        ctx = _lk.new_job_context(
            proc=self._proc,
            info=info,
            room=room,
            on_connect=lambda: None,
            on_shutdown=lambda reason: self.request_shutdown(reason or "user requested"),
        )
        room.on("disconnected", lambda *_: self.request_shutdown("room disconnected"))
        _lk.prepare_job_context(ctx)
        token = _lk.set_current_job_context(ctx)
        entry = asyncio.create_task(
            containment.contained(self._entrypoint(ctx), info.job.id),
            name=f"entrypoint:{info.job.id}",
        )
        entry.add_done_callback(self._on_entry_done)
        try:
            self.end_reason = await self._shutdown
            await self._shutdown_sequence(ctx, room, entry)
        finally:
            try:
                await _lk.finish_job_context(ctx)
            except Exception:
                logger.exception("job cleanup failed", extra=self.logging_extra())
            _lk.reset_current_job_context(token)

    def _fail(self, error: str) -> None:
        """Record why the call failed; the first reason wins."""
        if self._failure is None:
            self._failure = error

    def _escaped(self, error: str) -> None:
        """The call's code raised a BaseException (SystemExit...): end this call only."""
        logger.error("call code raised %s; only this call ends", error, extra=self.logging_extra())
        self._fail(error)
        self.request_shutdown(f"call code raised {error.split(':')[0]}")

    def _on_entry_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._ended_cleanly = True
            return
        if isinstance(exc, containment.ContainedExit):
            self._fail(str(exc))
            return
        if self._shutdown is not None and self._shutdown.done() and self._failure is None:
            # the call was already ending (hang-up or cut); its code unwinding is not a crash
            logger.debug("entrypoint ended with %r after shutdown", exc, extra=self.logging_extra())
            self._ended_cleanly = True
            return
        self._fail(f"{type(exc).__name__}: {exc}")
        logger.error("call crashed", exc_info=exc, extra=self.logging_extra())
        self.request_shutdown("job crashed")

    async def _shutdown_sequence(
        self, ctx: JobContext, room: Any, entry: asyncio.Task[None]
    ) -> None:
        # Close the session first: the entrypoint usually awaits it, and returns once the
        # session is closed, so a hang-up or a cut never waits out the close timeout.
        session = _lk.primary_session(ctx)
        if session is not None:
            try:
                await asyncio.wait_for(session.aclose(), self._close_timeout)
            except Exception:
                logger.exception("closing the session failed", extra=self.logging_extra())
        if not entry.done():
            try:
                await asyncio.wait_for(asyncio.shield(entry), self._close_timeout)
            except TimeoutError:
                logger.warning(
                    "entrypoint did not return %.0fs after shutdown; cancelling it",
                    self._close_timeout,
                    extra=self.logging_extra(),
                )
                await utils.aio.cancel_and_wait(entry)
            except BaseException:
                pass
        with contextlib.suppress(Exception):
            await room.disconnect()
        callbacks = _lk.shutdown_callbacks(ctx)
        results = await asyncio.gather(
            *(cb(self.end_reason) for cb in callbacks), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):
                logger.error("shutdown callback raised", exc_info=r, extra=self.logging_extra())

    def _settle(self) -> None:
        """The call's outcome: SUCCESS only on evidence that it ended normally."""
        if self._failure is not None:
            self.outcome, self.error = Outcome.FAILED, self._failure
        elif self._cancel_reason is not None:
            self.outcome, self.error = Outcome.CANCELLED, self._cancel_reason
        elif self._ended_cleanly:
            self.outcome = Outcome.SUCCESS
        else:
            self.outcome = Outcome.FAILED
            self.error = "the call's code did not finish after shutdown"


class CoroutineJobPool(utils.EventEmitter[PoolEvent]):
    """Stands where AgentServer expects its process pool: one CoroutineJob per call."""

    def __init__(self, *, entrypoint: Entrypoint, close_timeout: float = 15.0) -> None:
        super().__init__()
        self._entrypoint = entrypoint
        self._close_timeout = close_timeout
        self._proc = _lk.new_job_process()
        self._jobs: list[CoroutineJob] = []
        self._monitors: set[asyncio.Task[None]] = set()
        self._target_idle = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def job_process(self) -> JobProcess:
        return self._proc

    @property
    def processes(self) -> list[CoroutineJob]:
        return self._jobs

    def get_by_job_id(self, job_id: str) -> CoroutineJob | None:
        return next(
            (j for j in self._jobs if j.running_job and j.running_job.job.id == job_id), None
        )

    async def start(self) -> None:
        return None

    def set_target_idle_processes(self, num_idle_processes: int) -> None:
        self._target_idle = num_idle_processes

    @property
    def target_idle_processes(self) -> int:
        return self._target_idle

    async def launch_job(self, info: RunningJobInfo) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            containment.install(self._loop)
        info.launched_at = time.time()
        job = CoroutineJob(
            proc=self._proc, entrypoint=self._entrypoint, close_timeout=self._close_timeout
        )
        self._jobs.append(job)
        await job.launch_job(info)
        self.emit("process_job_launched", job)
        monitor = asyncio.create_task(self._monitor(job))
        self._monitors.add(monitor)
        monitor.add_done_callback(self._monitors.discard)

    async def _monitor(self, job: CoroutineJob) -> None:
        try:
            await job.join()
        except BaseException:
            pass
        finally:
            self._jobs.remove(job)
            self.emit("process_closed", job)

    async def aclose(self) -> None:
        """Worker shutdown with calls still live: each is closed and reported CANCELLED."""
        live = list(self._jobs)
        await asyncio.gather(*(j.cancel_call("worker shutdown") for j in live))
        await asyncio.gather(*self._monitors, return_exceptions=True)
        if self._loop is not None:
            containment.uninstall(self._loop)
            self._loop = None
