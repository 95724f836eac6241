"""PoolServer: the livekit AgentServer that serves an AgentPool.

Admission happens the moment an offer is read off the socket, against the pool's exact
counts: the answer does only the cap check and the reply. Everything else (the refusal's
count, audit record and log line, the load pushed to the server) runs after the reply
is queued, and the admitted call is launched only when its assignment arrives. With a
user request_fnc the offer goes through livekit's request hook instead. Jobs run on the
pool's chosen isolation; every call's end is reported honestly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from livekit.agents import JobExecutorType, JobProcess, JobRequest
from livekit.protocol import agent as lk_proto

from .. import _lk
from ..admission import Admit, Refuse, RejectReason
from ..errors import ConfigError
from ..sessions import Outcome
from .call import FAILED_ERROR_FIELD, FAILED_JOB_FIELD, OUTCOME_LOGGER, run_call
from .coroutine_jobs import CoroutineJob, CoroutineJobPool
from .dispatch_link import HeldOutcomes, backoff, describe_failure
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
        self._push_due = False
        """A status push is scheduled: load changes until it runs share it."""
        self._offers: dict[str, lk_proto.AvailabilityResponse | None] = {}
        """Jobs offered and not refused: None while deciding, then our positive answer."""
        self._expired: OrderedDict[str, float] = OrderedDict()
        """Jobs whose assignment never came in time (bounded), to name a late one."""
        self._held = HeldOutcomes()
        self._failure_kind: str | None = None
        pool.add_load_listener(self._load_changed)

    def _load_changed(self) -> None:
        """Tell the server our load soon, not at the next status tick (any thread).

        The push is scheduled, never sent from here: admitting an offer changes the load,
        and its reply goes out first. Changes until the push runs share one push, so a
        burst of offers costs the server one status update, carrying the load after it.
        """
        loop = self._status_loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._schedule_push()
        else:
            loop.call_soon_threadsafe(self._schedule_push)

    def _schedule_push(self) -> None:
        if not self._push_due:
            self._push_due = True
            self.after_reply(self._push_status)

    def _push_status(self) -> None:
        self._push_due = False
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
    def _decide(self, req: JobRequest) -> Admit | Refuse:
        try:
            return self.pool.decide(req)
        except Exception as e:
            # whatever the offer holds, it gets an answer and a count, never a traceback
            return Refuse(RejectReason.INVALID_JOB, f"{type(e).__name__} while deciding")

    def answer_offer(
        self, msg: lk_proto.AvailabilityRequest
    ) -> lk_proto.AvailabilityResponse | None:
        """The cap check and the reply, synchronously on receipt (no request_fnc)."""
        if self.pool.config.dispatch.request_fnc is not None:
            return None
        job = msg.job
        decision = self._decide(JobRequest(job=job, on_reject=_answered, on_accept=_answered))
        if isinstance(decision, Refuse):
            self._offers.pop(job.id, None)
            self.after_reply(
                self.pool.record_rejection, job.id, decision, _printable(job.room.name)
            )
            return lk_proto.AvailabilityResponse(job_id=job.id, available=False)
        attributes = {
            _lk.AGENT_ATTRIBUTE: decision.agent,
            "openrtc.version": self.pool.deployment_version,
        }
        if logger.isEnabledFor(logging.DEBUG):
            self.after_reply(logger.debug, "job %s admitted for %s", job.id, decision.agent)
        return self._remember_answer(job.id, decision.agent, f"agent-{job.id}", attributes)

    def offer_answered(self, seconds: float) -> None:
        self.pool.answer_times.observe(seconds)

    def offer_fell_through(self, job_id: str, error: Exception) -> None:
        logger.warning("job %s was accepted but not assigned: %s", job_id, error)
        self._expired[job_id] = time.monotonic()
        while len(self._expired) > 1024:
            self._expired.popitem(last=False)
        self._offers.pop(job_id, None)
        self.pool.release(job_id)

    async def _on_request(self, req: JobRequest) -> None:
        """livekit's request hook: runs only with a user request_fnc (see `answer_offer`)."""
        job_id = req.id
        decision = self._decide(req)
        if isinstance(decision, Refuse):
            self._offers.pop(job_id, None)
            try:
                await req.reject(terminate=False)
            finally:
                self.pool.record_rejection(job_id, decision, room=_printable(req.room.name))
            return
        accepted = False
        try:
            accepted = await self._ask_user_hook(req, decision.agent)
        except Exception as e:
            self.offer_fell_through(job_id, e)
            return
        if not accepted:
            self._offers.pop(job_id, None)
            self.pool.release(job_id)

    def _remember_answer(
        self, job_id: str, name: str, identity: str, attributes: dict[str, str]
    ) -> lk_proto.AvailabilityResponse:
        """Our positive answer, kept to answer a repeated offer for the same job alike."""
        answer = lk_proto.AvailabilityResponse(
            job_id=job_id,
            available=True,
            participant_identity=identity,
            participant_name=name,
        )
        answer.participant_attributes.update(attributes)
        self._offers[job_id] = answer
        return answer

    async def _ask_user_hook(self, req: JobRequest, agent: str) -> bool:
        """Run the user's request_fnc; it accepts or rejects through our bookkeeping."""
        answer: dict[str, bool] = {}

        async def on_accept(args: Any) -> None:
            answer["accepted"] = True
            # a job process learns the admitted agent from the participant name only
            name = agent if self.pool.isolation == "process" else args.name
            attributes = {**(args.attributes or {}), _lk.AGENT_ATTRIBUTE: agent}
            self._remember_answer(req.id, name, args.identity, attributes)
            await req.accept(
                name=name, identity=args.identity, metadata=args.metadata, attributes=attributes
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

    # --- exact caps against any server --------------------------------------------------
    def answer_held_offer(
        self, msg: lk_proto.AvailabilityRequest
    ) -> list[lk_proto.WorkerMessage] | None:
        job_id = msg.job.id
        if job_id not in self._offers:
            self._offers[job_id] = None
            return None
        answer = self._offers[job_id]
        logger.warning(
            "offer for job %r, which this worker already holds: answered from what it holds",
            _printable(job_id),
        )
        if answer is None:
            return []  # the answer being decided answers this offer too
        return [lk_proto.WorkerMessage(availability=answer)]

    async def unexpected_assignment(self, assignment: lk_proto.JobAssignment) -> None:
        job_id = assignment.job.id
        if self._proc_pool is not None and self._proc_pool.get_by_job_id(job_id) is not None:
            logger.warning("repeated assignment for running job %r ignored", _printable(job_id))
            return
        why = (
            "assignment after its offer timed out"
            if job_id in self._expired
            else "assignment for a job never offered to this worker"
        )
        self.pool.record_rejection(
            job_id, Refuse(RejectReason.INVALID_JOB, why), room=_printable(assignment.job.room.name)
        )
        update = lk_proto.UpdateJobStatus(
            job_id=job_id, status=lk_proto.JobStatus.JS_FAILED, error=f"refused: {why}"
        )
        await self.send_now(lk_proto.WorkerMessage(update_job=update))

    def unknown_termination(self, job_id: str) -> None:
        logger.info(
            "termination for job %r, which this worker does not run: ignored", _printable(job_id)
        )

    # --- the dispatch link ----------------------------------------------------------------
    def link_failed(self, error: Exception, attempt: int) -> float:
        kind, line = describe_failure(self.link_url, error)
        budget = self.pool.config.dispatch.retry_budget
        if kind != self._failure_kind:
            self._failure_kind = kind
            log = logger.error if kind == "refused" else logger.warning
            log("%s; retrying (a worker with no live calls gives up after %gs)", line, budget)
        else:
            logger.debug("%s (attempt %d)", line, attempt + 1)
        self.pool.record_dispatch_link(False, line)
        return backoff(attempt)

    async def link_restored(self) -> None:
        self._failure_kind = None
        held = self._held.take()
        for update in held:
            await self.send_now(lk_proto.WorkerMessage(update_job=update))
        if held:
            self.pool.audit_log.emit(
                "dispatch.outcomes_reported",
                target=self.pool.worker_id,
                job_ids=[u.job_id for u in held],
            )
        self.pool.record_dispatch_link(True)

    def hold_final_status(self, update: lk_proto.UpdateJobStatus) -> bool:
        self._held.hold(update)
        self.pool.audit_log.emit(
            "dispatch.outcome_held",
            target=update.job_id,
            job_id=update.job_id,
            status=lk_proto.JobStatus.Name(update.status),
            error=update.error,
        )
        return True

    def unreported_outcomes(self) -> dict[str, str]:
        """Final statuses the server never received (job id -> status name)."""
        return self._held.summary()

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
        self._offers.pop(job_id, None)
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


async def _answered(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("this offer is answered by the worker; a router or check only reads it")


def _printable(text: str, limit: int = 80) -> str:
    """Outsider-chosen text, safe to log and audit: valid UTF-8, bounded."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


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
