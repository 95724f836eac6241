"""Dispatch decisions and job bookkeeping, as a LiveKit server makes them.

Each dispatch runs in its own task, so a burst of dispatches produces a burst of
concurrent offers (the only way a worker's admission cap gets exercised). Worker
messages arrive through `handle()`; socket loss through `worker_gone()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from livekit.protocol import agent, models

from .auth import room_token
from .connection import WorkerConnection, WorkerGone
from .errors import JobNotActiveError, UnknownJobError
from .events import EventLog, Signal
from .records import WS_AVAILABLE, JobRecord, JobState, Offer, WorkerRecord, new_id
from .request import DispatchRequest

logger = logging.getLogger("openrtc.devserver")

RETRY_INTERVAL = 0.5
"""Pause before offering a job again to workers that all refused it."""

_FINAL_STATUS = {
    agent.JobStatus.JS_SUCCESS: JobState.SUCCESS,
    agent.JobStatus.JS_FAILED: JobState.FAILED,
    agent.JobStatus.JS_CANCELLED: JobState.CANCELLED,
}


class Dispatcher:
    """Workers, jobs, offers and the grace period for workers that lost their socket."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        ws_url: Callable[[], str],
        events: EventLog,
        offer_timeout: float,
        dispatch_deadline: float,
        migrate_grace: float,
    ) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self._ws_url = ws_url
        self._events = events
        self.offer_timeout = offer_timeout
        self.dispatch_deadline = dispatch_deadline
        self.migrate_grace = migrate_grace
        self.workers: dict[str, WorkerRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self._protos: dict[str, agent.Job] = {}
        self._conns: dict[str, WorkerConnection] = {}
        self._offering: Counter[str] = Counter()
        self._serving: dict[str, asyncio.Task[None]] = {}
        self._terminating: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers_changed = Signal()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    # -- workers ---------------------------------------------------------------------

    def connection(self, worker_id: str) -> WorkerConnection | None:
        return self._conns.get(worker_id)

    def connections(self) -> list[WorkerConnection]:
        return list(self._conns.values())

    def add_worker(
        self, worker_id: str, reg: agent.RegisterWorkerRequest, conn: WorkerConnection
    ) -> WorkerRecord:
        """Record a worker that has been sent its register response; it can take offers now."""
        worker = WorkerRecord(
            id=worker_id,
            agent_name=reg.agent_name,
            version=reg.version,
            job_type=agent.JobType.Name(reg.type),
            connected_at=time.time(),
        )
        self.workers[worker_id] = worker
        self._conns[worker_id] = conn
        self._events.append(
            "worker_registered",
            worker_id=worker_id,
            agent_name=worker.agent_name,
            version=worker.version,
        )
        self._workers_changed.notify()
        return worker

    def worker_gone(self, worker_id: str) -> None:
        """The worker's socket ended: fail its pending offers, hold its jobs for migration."""
        worker = self.workers[worker_id]
        conn = self._conns.pop(worker_id, None)
        if conn is not None:
            conn.fail_pending()
        worker.connected = False
        worker.disconnected_at = time.time()
        held = [job_id for job_id in worker.jobs if not self.jobs[job_id].state.final]
        self._events.append("worker_disconnected", worker_id=worker_id, jobs=held)
        if held and not self._closed:
            self._spawn(self._expire_unmigrated(worker_id, held))
        self._workers_changed.notify()

    async def handle(self, worker: WorkerRecord, msg: agent.WorkerMessage) -> None:
        """Apply one message from a registered worker."""
        which = msg.WhichOneof("message")
        conn = self._conns.get(worker.id)
        if which == "availability":
            if conn is None or not conn.resolve_answer(msg.availability):
                logger.warning(
                    "ignored a late or unexpected availability answer for job %s from %s",
                    msg.availability.job_id,
                    worker.id,
                )
        elif which == "update_worker":
            self._update_worker(worker, msg.update_worker)
        elif which == "update_job":
            self._update_job(worker, msg.update_job)
        elif which == "migrate_job":
            self._migrate(worker, msg.migrate_job)
        elif which == "ping" and conn is not None:
            pong = agent.WorkerPong(
                last_timestamp=msg.ping.timestamp, timestamp=int(time.time() * 1000)
            )
            with contextlib.suppress(WorkerGone):
                await conn.send(agent.ServerMessage(pong=pong))
        else:
            logger.debug("ignored a %r message from worker %s", which, worker.id)

    def _update_worker(self, worker: WorkerRecord, update: agent.UpdateWorkerStatus) -> None:
        status = agent.WorkerStatus.Name(update.status)
        changed = status != worker.status or update.draining != worker.draining
        worker.status = status
        worker.load = update.load
        worker.job_count = update.job_count
        worker.draining = update.draining
        if changed:
            self._events.append(
                "worker_status",
                worker_id=worker.id,
                status=status,
                load=worker.load,
                job_count=worker.job_count,
                draining=worker.draining,
            )
        self._workers_changed.notify()

    def _update_job(self, worker: WorkerRecord, update: agent.UpdateJobStatus) -> None:
        job = self.jobs.get(update.job_id)
        if job is None or job.worker_id != worker.id:
            logger.warning(
                "ignored a status for job %s from worker %s, which does not hold it",
                update.job_id,
                worker.id,
            )
            return
        if job.state.final or update.status == agent.JobStatus.JS_PENDING:
            return
        if update.status == agent.JobStatus.JS_RUNNING:
            if job.state is JobState.ASSIGNED:
                job.state = JobState.RUNNING
                job.running_at = time.time()
                self._events.append(
                    "job_status", job_id=job.id, worker_id=worker.id, state=job.state.value
                )
            return
        job.state = _FINAL_STATUS.get(update.status, JobState.FAILED)
        job.error = update.error
        job.ended_at = time.time()
        job.ended_by = "server" if job.id in self._terminating else "worker"
        self._terminating.discard(job.id)
        with contextlib.suppress(ValueError):
            worker.jobs.remove(job.id)
        self._events.append(
            "job_status",
            job_id=job.id,
            worker_id=worker.id,
            state=job.state.value,
            error=job.error,
            ended_by=job.ended_by,
        )
        self._workers_changed.notify()

    def _migrate(self, worker: WorkerRecord, request: agent.MigrateJobRequest) -> None:
        for job_id in request.job_ids:
            job = self.jobs.get(job_id)
            if job is None or job.state.final or job.worker_id == worker.id:
                logger.warning("refused to migrate job %s to %s: not open", job_id, worker.id)
                continue
            old = self.workers.get(job.worker_id or "")
            if old is not None and old.connected:
                logger.warning(
                    "refused to migrate job %s to %s: its worker %s is still connected",
                    job_id,
                    worker.id,
                    old.id,
                )
                continue
            if job.agent_name != worker.agent_name:
                logger.warning(
                    "refused to migrate job %s to %s: it is registered as a different agent",
                    job_id,
                    worker.id,
                )
                continue
            if old is not None:
                with contextlib.suppress(ValueError):
                    old.jobs.remove(job_id)
            worker.jobs.append(job_id)
            job.worker_id = worker.id
            job.worker_version = worker.version
            self._events.append(
                "job_migrated",
                job_id=job_id,
                from_worker=old.id if old is not None else None,
                to_worker=worker.id,
            )
            if job_id in self._terminating:
                self._spawn(self._send_termination(job))

    async def _expire_unmigrated(self, worker_id: str, job_ids: list[str]) -> None:
        await asyncio.sleep(self.migrate_grace)
        worker = self.workers[worker_id]
        for job_id in job_ids:
            job = self.jobs[job_id]
            if job.worker_id != worker_id or job.state.final:
                continue
            job.state = JobState.DROPPED
            job.ended_at = time.time()
            job.error = (
                f"worker {worker_id} disconnected and did not migrate the job "
                f"within {self.migrate_grace:g}s"
            )
            self._terminating.discard(job_id)
            with contextlib.suppress(ValueError):
                worker.jobs.remove(job_id)
            self._events.append("job_dropped", job_id=job_id, worker_id=worker_id)

    # -- jobs ------------------------------------------------------------------------

    def dispatch(self, request: DispatchRequest) -> JobRecord:
        """Create the job and start offering it in the background."""
        if self._closed:
            raise RuntimeError("the dispatch server is closed; start a new one to dispatch jobs")
        job = JobRecord(
            id=new_id("AJ_"),
            dispatch_id=new_id("AD_"),
            room=request.room,
            room_sid=new_id("RM_"),
            agent_name=request.agent_name,
            metadata=request.metadata,
            room_metadata=request.room_metadata,
            created_at=time.time(),
        )
        self.jobs[job.id] = job
        self._protos[job.id] = agent.Job(
            id=job.id,
            dispatch_id=job.dispatch_id,
            type=agent.JobType.JT_ROOM,
            room=models.Room(
                sid=job.room_sid,
                name=job.room,
                metadata=job.room_metadata,
                creation_time=int(job.created_at),
            ),
            metadata=job.metadata,
            agent_name=job.agent_name,
        )
        self._events.append("job_created", job_id=job.id, room=job.room, agent_name=job.agent_name)
        deadline = request.deadline if request.deadline is not None else self.dispatch_deadline
        self._serving[job.id] = self._spawn(self._serve(job, deadline))
        return job

    def job(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJobError(f"no job {job_id!r} was dispatched on this server.")
        return job

    async def end_call(self, job_id: str) -> JobRecord:
        """Hang up: cancel a job still being offered, or ask its worker to terminate it."""
        job = self.job(job_id)
        if job.state.final:
            raise JobNotActiveError(f"job {job_id} already ended ({job.state.value}).")
        self._terminating.add(job_id)
        if job.state is JobState.PENDING:
            await self._stop_offering(job)
            if job.state.final:
                return job
        if job.worker_id in self._conns:
            await self._send_termination(job)
        else:
            logger.info("job %s will be terminated once its worker reconnects", job_id)
        return job

    async def _stop_offering(self, job: JobRecord) -> None:
        """Cancel the offer task; the job is cancelled unless an assignment just went out."""
        task = self._serving.pop(job.id, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if job.state is JobState.PENDING:
            self._finish(job, JobState.CANCELLED, "ended before any worker took it", "server")
            self._events.append(
                "job_status", job_id=job.id, state=job.state.value, ended_by="server"
            )

    async def _send_termination(self, job: JobRecord) -> None:
        conn = self._conns.get(job.worker_id or "")
        if conn is None:
            return
        try:
            await conn.send(agent.ServerMessage(termination=agent.JobTermination(job_id=job.id)))
        except WorkerGone:
            logger.info("job %s will be terminated once its worker reconnects", job.id)
            return
        self._events.append("job_terminated_sent", job_id=job.id, worker_id=job.worker_id)

    def _finish(self, job: JobRecord, state: JobState, error: str, ended_by: str | None) -> None:
        job.state = state
        job.error = error
        job.ended_at = time.time()
        job.ended_by = ended_by
        self._terminating.discard(job.id)

    async def _serve(self, job: JobRecord, deadline: float) -> None:
        """Offer the job to eligible workers in order until one takes it or time runs out."""
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + deadline
        tried: set[str] = set()
        try:
            while job.state is JobState.PENDING:
                remaining = ends_at - loop.time()
                if remaining <= 0:
                    break
                worker = self._pick(job, tried)
                if worker is None:
                    await self._workers_changed.wait(min(RETRY_INTERVAL, remaining))
                    tried.clear()
                    continue
                tried.add(worker.id)
                answer = await self._offer(job, worker, min(self.offer_timeout, remaining))
                if answer is None or not answer.available:
                    if answer is not None and answer.terminate:
                        self._unserved(job, f"worker {worker.id} refused it and asked to end it")
                        return
                    continue
                await self._assign(job, worker, answer)
            if job.state is JobState.PENDING:
                self._unserved(
                    job,
                    f"no worker registered as agent {job.agent_name!r} took the job "
                    f"within {deadline:g}s ({len(job.offers)} offers)",
                )
        finally:
            self._serving.pop(job.id, None)

    def _unserved(self, job: JobRecord, error: str) -> None:
        self._finish(job, JobState.UNSERVED, error, None)
        self._events.append(
            "job_unserved", job_id=job.id, agent_name=job.agent_name, offers=len(job.offers)
        )

    def _pick(self, job: JobRecord, tried: set[str]) -> WorkerRecord | None:
        """The eligible worker with the lowest load, then fewest jobs, then the oldest."""
        candidates = [
            worker
            for worker in self.workers.values()
            if worker.connected
            and worker.id in self._conns
            and worker.id not in tried
            and worker.agent_name == job.agent_name
            and worker.status == WS_AVAILABLE
            and not worker.draining
            and worker.job_type == "JT_ROOM"
        ]
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda w: (w.load, len(w.jobs) + self._offering[w.id], w.connected_at),
        )

    async def _offer(
        self, job: JobRecord, worker: WorkerRecord, timeout: float
    ) -> agent.AvailabilityResponse | None:
        """Send one AvailabilityRequest; None when the worker does not answer in time."""
        conn = self._conns[worker.id]
        offer = Offer(worker_id=worker.id)
        job.offers.append(offer)
        future = conn.expect_answer(job.id)
        self._offering[worker.id] += 1
        self._events.append("job_offered", job_id=job.id, worker_id=worker.id)
        request = agent.AvailabilityRequest(job=self._protos[job.id])
        try:
            # the worker's answer time: from the frame on the socket to the answer read back
            sent_at = await conn.send(agent.ServerMessage(availability=request))
            got = await asyncio.wait_for(future, timeout)
        except (TimeoutError, WorkerGone) as exc:
            offer.available = False
            reason = "timeout" if isinstance(exc, TimeoutError) else "disconnected"
            self._events.append(
                "job_offer_answered",
                job_id=job.id,
                worker_id=worker.id,
                available=False,
                no_answer=reason,
            )
            return None
        finally:
            conn.forget_answer(job.id)
            self._offering[worker.id] -= 1
        answer = got.response
        offer.available = answer.available
        offer.answered_in_ms = round((got.arrived_at - sent_at) * 1000, 1)
        self._events.append(
            "job_offer_answered",
            job_id=job.id,
            worker_id=worker.id,
            available=answer.available,
            answered_in_ms=offer.answered_in_ms,
        )
        return answer

    async def _assign(
        self, job: JobRecord, worker: WorkerRecord, answer: agent.AvailabilityResponse
    ) -> None:
        """Send the JobAssignment with a real room token; the job stays pending on failure."""
        conn = self._conns.get(worker.id)
        if conn is None:
            return
        identity = answer.participant_identity or f"agent-{job.id}"
        token = room_token(
            self._api_key,
            self._api_secret,
            room=job.room,
            identity=identity,
            name=answer.participant_name,
            metadata=answer.participant_metadata,
            attributes=dict(answer.participant_attributes),
        )
        job.state = JobState.ASSIGNED
        job.worker_id = worker.id
        job.worker_version = worker.version
        job.participant_identity = identity
        job.assigned_at = time.time()
        worker.jobs.append(job.id)
        assignment = agent.JobAssignment(job=self._protos[job.id], url=self._ws_url(), token=token)
        try:
            await conn.send(agent.ServerMessage(assignment=assignment))
        except WorkerGone:
            job.state = JobState.PENDING
            job.worker_id = job.worker_version = job.participant_identity = None
            job.assigned_at = None
            with contextlib.suppress(ValueError):
                worker.jobs.remove(job.id)
            return
        self._events.append(
            "job_assigned",
            job_id=job.id,
            worker_id=worker.id,
            room=job.room,
            participant_identity=identity,
        )

    # -- lifetime --------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("dispatch server task failed", exc_info=exc)

    async def aclose(self) -> None:
        """Stop offering and grace timers; jobs still being offered become unserved."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in self.jobs.values():
            if job.state is JobState.PENDING:
                self._unserved(job, "the dispatch server closed before a worker took the job")
