"""PoolServer: the livekit AgentServer that serves an AgentPool.

Admission happens in the request hook, at offer time, against the pool's exact counts;
jobs run on the pool's chosen isolation; every call's end is reported honestly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from livekit.agents import JobExecutorType, JobProcess, JobRequest

from .. import _lk
from ..sessions import Outcome
from .call import FAILED_ERROR_FIELD, FAILED_JOB_FIELD, run_call
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
    def __init__(
        self,
        pool: AgentPool,
        *,
        ws_url: str | None,
        api_key: str | None,
        api_secret: str | None,
    ) -> None:
        _lk.check_internals()
        self.pool = pool
        self._cut: dict[str, str] = {}
        """Thread/process jobs closed by a drain cut, and why: they end CANCELLED."""
        executor = _EXECUTORS.get(pool.isolation, JobExecutorType.THREAD)
        kwargs: dict[str, Any] = {}
        if pool.isolation == "coroutine":
            kwargs["num_idle_processes"] = 0
        else:
            # a job process imports livekit and loads the models: seconds on a busy box
            kwargs["initialize_process_timeout"] = 60.0
        super().__init__(
            ws_url=ws_url,
            api_key=api_key,
            api_secret=api_secret,
            job_executor_type=executor,
            load_fnc=pool.exact_load,
            load_threshold=1.0,
            drain_timeout=int(pool.drain_timeout),
            host="127.0.0.1",
            port=0,
            setup_fnc=_prewarm if pool.isolation != "coroutine" and pool.prewarm_models else None,
            shutdown_process_timeout=pool.session_close_timeout,
            **kwargs,
        )
        entrypoint: Any = self._entrypoint
        if pool.isolation == "process":
            entrypoint = functools.partial(process_entrypoint, blueprint_of(pool))
        self.rtc_session(entrypoint, agent_name=pool.agent_name, on_request=self._on_request)
        self.on("worker_registered", self._on_registered)
        self._outcomes = _OutcomeRecorder(pool)
        logging.getLogger("openrtc.call").addHandler(self._outcomes)

    async def _entrypoint(self, ctx: Any) -> None:
        await run_call(self.pool, ctx)

    def _on_registered(self, worker_id: str, _server_info: Any) -> None:
        first = not self.pool.worker_id
        self.pool.set_worker_id(worker_id)
        if first:
            self.pool.mark_started()

    # --- admission --------------------------------------------------------------------
    async def _on_request(self, req: JobRequest) -> None:
        from ..pool import Refuse

        decision = self.pool.decide(req)
        if isinstance(decision, Refuse):
            self.pool.record_rejection(req.id, decision, room=req.room.name)
            await req.reject(terminate=False)
            return
        accepted = False
        try:
            if self.pool.request_fnc is not None:
                accepted = await self._ask_user_hook(req)
            else:
                await req.accept(
                    name=decision.agent,
                    identity=f"agent-{req.id}",
                    attributes={
                        "openrtc.agent": decision.agent,
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

    async def _ask_user_hook(self, req: JobRequest) -> bool:
        """Run the user's request_fnc; it accepts or rejects through our bookkeeping."""
        from ..admission import RejectReason
        from ..pool import Refuse

        answer: dict[str, bool] = {}

        async def on_accept(args: Any) -> None:
            answer["accepted"] = True
            await req.accept(
                name=args.name,
                identity=args.identity,
                metadata=args.metadata,
                attributes=args.attributes,
            )

        async def on_reject(terminate: bool) -> None:
            answer["accepted"] = False
            await req.reject(terminate=terminate)

        proxy = JobRequest(job=req.job, on_reject=on_reject, on_accept=on_accept)
        assert self.pool.request_fnc is not None
        result = self.pool.request_fnc(proxy)
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

        if info.job.id in self._cut:
            return int(lk_proto.JobStatus.JS_CANCELLED)
        if self.pool.crash_of(info.job.id) is not None:
            self.pool.forget_crash(info.job.id)
            return int(lk_proto.JobStatus.JS_FAILED)
        return None

    def make_job_pool(self, stock_pool: Any) -> Any:
        pool: Any = stock_pool
        if self.pool.isolation == "coroutine":
            pool = CoroutineJobPool(
                entrypoint=self._entrypoint, close_timeout=self.pool.session_close_timeout
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
            status = executor.outcome or Outcome.SUCCESS
            error = executor.error or None
            reason = executor.end_reason
            self.pool.forget_crash(job_id)
        elif job_id in self._cut:
            status, error, reason = Outcome.CANCELLED, None, self._cut[job_id]
        else:
            crash = self.pool.crash_of(job_id)
            status = Outcome.FAILED if crash else Outcome.SUCCESS
            error, reason = crash, "job closed"
        self.pool.session_ended(job_id, status, error, reason)

    async def aclose(self) -> None:
        logging.getLogger("openrtc.call").removeHandler(self._outcomes)
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


def _executor_running(executor: Any) -> bool:
    try:
        return bool(executor.status == _lk.ExecutorStatus.RUNNING)
    except RuntimeError:
        return False


class _OutcomeRecorder(logging.Handler):
    """Hears "call failed" records, which job processes send over livekit's log channel."""

    def __init__(self, pool: AgentPool) -> None:
        super().__init__(logging.ERROR)
        self.pool = pool

    def emit(self, record: logging.LogRecord) -> None:
        job_id = getattr(record, FAILED_JOB_FIELD, None)
        if isinstance(job_id, str):
            self.pool.record_crash(job_id, str(getattr(record, FAILED_ERROR_FIELD, "")))
