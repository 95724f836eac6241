"""PoolServer: the livekit AgentServer that serves an AgentPool.

Admission happens in the request hook, at offer time, against the pool's exact counts;
jobs run on the pool's chosen isolation; every call's end is reported honestly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from typing import TYPE_CHECKING, Any

from livekit.agents import JobExecutorType, JobProcess, JobRequest

from .. import _lk
from ..admission import Refuse, RejectReason
from ..errors import ConfigError
from ..sessions import Outcome
from .call import FAILED_ERROR_FIELD, FAILED_JOB_FIELD, OUTCOME_LOGGER, run_call
from .coroutine_jobs import CoroutineJob, CoroutineJobPool
from .models import shared_models
from .process_entry import blueprint_of, process_entrypoint

if TYPE_CHECKING:
    from ..pool import AgentPool

logger = logging.getLogger("openrtc.worker")

_EXECUTORS = {"thread": JobExecutorType.THREAD, "process": JobExecutorType.PROCESS}


def _prewarm(proc: JobProcess) -> None:
    """Thread/process isolation: each job runner loads (or reuses) the shared models."""
    shared_models()


class PoolServer(_lk.ServerInternals):
    """One per pool run: build it with the pool and the server's address and keys."""

    def __init__(
        self,
        pool: AgentPool,
        *,
        ws_url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
    ) -> None:
        _lk.check_internals()
        if not len(pool.registry):
            raise ConfigError("the pool has no agents; add one with pool.add() or discover()")
        if pool.registered:
            raise ConfigError("this pool is already serving; build one worker per pool")
        self.pool = pool
        runtime, drain = pool.config.runtime, pool.config.drain
        self._cut: dict[str, str] = {}
        """Thread/process jobs closed by a drain cut, and why: they end CANCELLED."""
        self._final: dict[str, Outcome] = {}
        """Thread/process jobs' outcomes, decided when they closed, until sent."""
        executor = _EXECUTORS.get(runtime.isolation, JobExecutorType.THREAD)
        kwargs: dict[str, Any] = {}
        if runtime.isolation == "coroutine":
            kwargs["num_idle_processes"] = 0
        else:
            # a job process imports livekit and loads the models: seconds on a busy box
            kwargs["initialize_process_timeout"] = 60.0
        prewarm = runtime.isolation != "coroutine" and runtime.prewarm_models
        super().__init__(
            ws_url=ws_url,
            api_key=api_key,
            api_secret=api_secret,
            job_executor_type=executor,
            load_fnc=pool.exact_load,
            load_threshold=1.0,
            drain_timeout=int(drain.timeout),
            host="127.0.0.1",
            port=0,
            setup_fnc=_prewarm if prewarm else None,
            shutdown_process_timeout=drain.session_close_timeout,
            **kwargs,
        )
        entrypoint: Any = self._entrypoint
        if runtime.isolation == "process":
            entrypoint = functools.partial(process_entrypoint, blueprint_of(pool))
        self.rtc_session(
            entrypoint, agent_name=pool.config.dispatch.agent_name, on_request=self._on_request
        )
        self.on("worker_registered", self._on_registered)
        self._outcomes = _OutcomeRecorder(pool)
        outcomes = logging.getLogger(OUTCOME_LOGGER)
        # INFO is copied into job processes (livekit passes logger levels on), so their
        # outcome records come back; they are evidence, not output: not propagated here
        outcomes.setLevel(logging.INFO)
        outcomes.propagate = False
        outcomes.addHandler(self._outcomes)
        self._status_loop: asyncio.AbstractEventLoop | None = None
        self._pushes: set[asyncio.Task[None]] = set()
        pool.add_load_listener(self._load_changed)

    def _load_changed(self) -> None:
        """Tell the server our load now, not at the next status tick (any thread)."""
        loop = self._status_loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._push_status()
        else:
            loop.call_soon_threadsafe(self._push_status)

    def _push_status(self) -> None:
        task = asyncio.ensure_future(self.push_worker_status())
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def run(self, *args: Any, **kwargs: Any) -> None:
        self._status_loop = asyncio.get_running_loop()
        await super().run(*args, **kwargs)

    async def _entrypoint(self, ctx: Any) -> None:
        await run_call(self.pool, ctx)

    def _on_registered(self, worker_id: str, _server_info: Any) -> None:
        self.pool.mark_registered(worker_id)

    # --- admission --------------------------------------------------------------------
    async def _on_request(self, req: JobRequest) -> None:
        decision = self.pool.decide(req)
        if isinstance(decision, Refuse):
            self.pool.record_rejection(req.id, decision, room=req.room.name)
            await req.reject(terminate=False)
            return
        accepted = False
        try:
            if self.pool.config.dispatch.request_fnc is not None:
                accepted = await self._ask_user_hook(req, decision.agent)
            else:
                await req.accept(
                    name=decision.agent,
                    identity=f"agent-{req.id}",
                    attributes={
                        _lk.AGENT_ATTRIBUTE: decision.agent,
                        "openrtc.version": self.pool.deployment_version,
                    },
                )
                accepted = True
        except Exception as e:
            logger.warning("job %s was accepted but not assigned: %s", req.id, e)
            accepted = False
        finally:
            if not accepted:
                self.pool.release(req.id)

    async def _ask_user_hook(self, req: JobRequest, agent: str) -> bool:
        """Run the user's request_fnc; it accepts or rejects through our bookkeeping."""
        answer: dict[str, bool] = {}

        async def on_accept(args: Any) -> None:
            answer["accepted"] = True
            # a job process learns the admitted agent from the participant name only
            name = agent if self.pool.isolation == "process" else args.name
            await req.accept(
                name=name,
                identity=args.identity,
                metadata=args.metadata,
                attributes={**(args.attributes or {}), _lk.AGENT_ATTRIBUTE: agent},
            )

        async def on_reject(terminate: bool) -> None:
            answer["accepted"] = False
            await req.reject(terminate=terminate)

        proxy = JobRequest(job=req.job, on_reject=on_reject, on_accept=on_accept)
        request_fnc = self.pool.config.dispatch.request_fnc
        assert request_fnc is not None
        result = request_fnc(proxy)
        if asyncio.iscoroutine(result):
            await result
        if "accepted" not in answer:
            await req.reject(terminate=False)
            answer["accepted"] = False
        if not answer["accepted"]:
            self.pool.record_rejection(
                req.id, Refuse(RejectReason.REQUEST_FNC, "request_fnc rejected"), req.room.name
            )
        return answer["accepted"]

    # --- hooks for the private overrides ----------------------------------------------
    def exact_load(self) -> float:
        return self.pool.exact_load()

    def job_status_for(self, executor: Any) -> int | None:
        if isinstance(executor, CoroutineJob):
            return executor.proto_status
        info = executor.running_job
        if info is None or _executor_running(executor):
            return None
        from livekit.protocol import agent as lk_proto

        final = self._final.pop(info.job.id, None)
        self._cut.pop(info.job.id, None)
        self.pool.forget_crash(info.job.id)
        return {
            None: None,
            Outcome.SUCCESS: int(lk_proto.JobStatus.JS_SUCCESS),
            Outcome.FAILED: int(lk_proto.JobStatus.JS_FAILED),
            Outcome.CANCELLED: int(lk_proto.JobStatus.JS_CANCELLED),
        }[final]

    def make_job_pool(self, stock_pool: Any) -> Any:
        pool: Any = stock_pool
        if self.pool.isolation == "coroutine":
            pool = CoroutineJobPool(
                entrypoint=self._entrypoint,
                close_timeout=self.pool.config.drain.session_close_timeout,
            )
        pool.on("process_job_launched", self._on_job_launched)
        pool.on("process_closed", self._on_job_closed)
        return pool

    def _on_job_launched(self, executor: Any) -> None:
        info = executor.running_job
        if info is None:
            return
        session_info = self.pool.session_info(info.job)
        if session_info is not None:
            self.pool.session_started(session_info)

    def _on_job_closed(self, executor: Any) -> None:
        info = executor.running_job
        if info is None:
            return
        job_id = info.job.id
        if isinstance(executor, CoroutineJob):
            status = executor.outcome or Outcome.FAILED
            error = executor.error or (None if executor.outcome else "the call ended unsettled")
            reason = executor.end_reason
            self.pool.forget_crash(job_id)
        else:
            status, error, reason = self._settle_job_runner(executor, job_id)
            self._final[job_id] = status
        self.pool.session_ended(job_id, status, error, reason)

    def _settle_job_runner(self, executor: Any, job_id: str) -> tuple[Outcome, str | None, str]:
        """A thread/process job's outcome: SUCCESS only when the call reported a clean end."""
        if job_id in self._cut:
            return Outcome.CANCELLED, None, self._cut[job_id]
        crash = self.pool.crash_of(job_id)
        if crash:
            return Outcome.FAILED, crash, "job closed"
        code = getattr(executor, "exitcode", None)
        if isinstance(code, int) and code != 0:
            return Outcome.FAILED, f"the job process died ({_describe_exit(code)})", "job died"
        if self.pool.ended_cleanly(job_id):
            return Outcome.SUCCESS, None, "job closed"
        return Outcome.FAILED, "the job ended without reporting how its call ended", "job closed"

    async def aclose(self) -> None:
        logging.getLogger(OUTCOME_LOGGER).removeHandler(self._outcomes)
        await super().aclose()

    async def cut_live_calls(self, reason: str) -> list[str]:
        """Close every live call now (drain timeout); returns the cut job ids."""
        cut: list[str] = []
        tasks = []
        for executor in self.job_executors():
            info = executor.running_job
            if info is None:
                continue
            cut.append(info.job.id)
            if isinstance(executor, CoroutineJob):
                tasks.append(executor.cancel_call(reason))
            else:
                self._cut[info.job.id] = reason
                tasks.append(executor.aclose())
        await asyncio.gather(*tasks, return_exceptions=True)
        return cut


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _executor_running(executor: Any) -> bool:
    try:
        return bool(executor.status == _lk.ExecutorStatus.RUNNING)
    except RuntimeError:
        return False


class _OutcomeRecorder(logging.Handler):
    """Hears each call's outcome record (job processes send theirs over livekit's log
    channel): the parent's evidence of how a thread or process call ended."""

    def __init__(self, pool: AgentPool) -> None:
        super().__init__(logging.INFO)
        self.pool = pool

    def emit(self, record: logging.LogRecord) -> None:
        job_id = getattr(record, FAILED_JOB_FIELD, None)
        if not isinstance(job_id, str):
            return
        error = getattr(record, FAILED_ERROR_FIELD, None)
        if error is None:
            self.pool.record_clean_end(job_id)
        else:
            self.pool.record_crash(job_id, str(error))
