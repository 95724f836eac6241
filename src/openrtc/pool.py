"""AgentPool: many standard LiveKit agents served by one worker.

The pool holds the registry (which agents exist), the admission rules (which calls this
worker takes), and the runtime record of the calls it runs. It owns the lifecycle's
state but never moves it: `begin_drain()`, a manifest's verdict and the server's
registration are recorded here as requests, and the worker's lifespan
(`openrtc.worker.lifespan`) carries them out. `openrtc.worker` turns a pool into a
running LiveKit worker; `openrtc.cli` runs that worker as a process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from livekit.agents import Agent, JobRequest
from livekit.protocol import agent as lk_proto

from . import admission, log_context, routing, tenancy
from .admission import AdmissionCheck, Admit, Refuse
from .audit import AuditEvent, AuditLog
from .audit.shipping import open_sinks
from .config import DEFAULT_VERSION, ISOLATIONS, Isolation, PoolConfig
from .errors import ConfigError, RegistrationError
from .lifecycle import Lifecycle, Transition, WorkerState
from .lifecycle import logger as lifecycle_logger
from .observers import Deliveries
from .registry import AgentSpec, Registry, agent_files, spec_from_file, validate_agent_class
from .sessions import LiveSession, Outcome, SessionInfo, SessionObserver, SessionOutcome
from .simulation.script import SIMULATED_CALL_KEY
from .snapshot import RuntimeSnapshot

logger = logging.getLogger("openrtc.pool")

_NO_CALLS = admission.Ledger()
_NO_CAPS = admission.Caps()
"""The state-only check before routing (read, never written: built once, not per offer)."""

__all__ = [
    "DEFAULT_VERSION",
    "ISOLATIONS",
    "AdmissionCheck",
    "Admit",
    "AgentPool",
    "DrainRequest",
    "Isolation",
    "PoolConfig",
    "Refuse",
]

_PRIVATE_METADATA = frozenset({SIMULATED_CALL_KEY, "tenant_sig"})
"""Metadata the worker consumes and does not pass on to agents and observers."""

SessionOptionHook = Callable[[AgentSpec, SessionInfo, dict[str, Any]], None]

Program = Callable[["AgentPool", "list[str] | None"], None]
"""What `AgentPool.run` hands the pool and its arguments to: the command line."""
_program: Program | None = None


def install_program(program: Program) -> None:
    """Name the command line `AgentPool.run` runs. It sits above the pool in the layers,
    so the pool never imports it: the `openrtc` package installs it when it is imported
    (always before any pool exists)."""
    global _program
    _program = program


@dataclass(frozen=True)
class DrainRequest:
    """Who asked this worker to drain, and why (the first request wins)."""

    reason: str
    actor: str


class AgentPool:
    """Register plain `livekit.agents.Agent` subclasses; one worker serves them all.

    The common settings are keywords; every other one lives in a typed group of
    `config` (`openrtc.config.PoolConfig`). With no `config`, the groups are read from
    the `OPENRTC_*` variables (`PoolConfig.from_env()`); a keyword given here wins over
    the same setting in `config`.
    """

    def __init__(
        self,
        agents: Mapping[str, type[Agent]] | None = None,
        *,
        deployment_version: str | None = None,
        drain_timeout: float | None = None,
        isolation: Isolation | None = None,
        max_concurrent_sessions: int | None = None,
        default_stt: Any = None,
        default_llm: Any = None,
        default_tts: Any = None,
        audit_sink: Callable[[AuditEvent], None] | None = None,
        observers: Iterable[SessionObserver] = (),
        config: PoolConfig | None = None,
    ) -> None:
        cfg = PoolConfig.from_env() if config is None else config
        for group, changes in (
            ("deployment", {"version": deployment_version}),
            ("drain", {"timeout": drain_timeout}),
            ("runtime", {"isolation": isolation}),
            ("limits", {"max_sessions": max_concurrent_sessions}),
            ("providers", {"stt": default_stt, "llm": default_llm, "tts": default_tts}),
            ("audit", {"sink": audit_sink}),
        ):
            given = {k: v for k, v in changes.items() if v is not None}
            if given:
                cfg = cfg.replace(group, **given)
        self.config: PoolConfig = cfg
        """Every setting of this pool, one frozen group per concern."""

        self.registry = Registry()
        self.observers: list[SessionObserver] = list(observers)
        self.log = log_context.FieldsAdapter(
            logger, {"deployment_version": self.deployment_version}
        )
        self.lifecycle = Lifecycle(
            log=log_context.FieldsAdapter(
                lifecycle_logger, {"deployment_version": self.deployment_version}
            )
        )
        self.lifecycle.subscribe(self._on_transition)
        self.audit_log = AuditLog(
            version=self.deployment_version,
            sink=cfg.audit.sink,
            path=cfg.audit.path,
            keys=cfg.audit.keys(),
            durability=cfg.audit.durability,
            refusal_interval_s=cfg.audit.refusal_interval_s,
        )
        self.member: bool | None = None
        """What the manifest last said of this version (None: no manifest in use)."""
        self.membership_reason = ""
        self.drain_request: DrainRequest | None = None
        self.registered = False
        """The server accepted this worker's registration (it may take calls)."""
        self.dispatch_down: str | None = None
        """Why the dispatch link is down (None: up, or never tried yet)."""
        self.dispatch_down_since: float | None = None
        """time.monotonic() when the link went down (None: up)."""

        self._lock = threading.Lock()
        self._ledger = admission.Ledger()
        self._live: dict[str, LiveSession] = {}
        self._routes: dict[str, routing.Route] = {}
        self._crashes: dict[str, str] = {}
        self._clean_ends: set[str] = set()
        self._deliveries = Deliveries(lambda: self.observers)
        self._accepted_total = 0
        self._rejected: Counter[str] = Counter()
        self.answer_times = admission.AnswerTimes()
        """How long the worker took to answer offers (fed by its server, on the loop)."""
        self._outcomes: Counter[str] = Counter()
        self._started_at = time.time()
        self._worker_id = ""
        self._request_listeners: list[Callable[[], None]] = []
        self._load_listeners: list[Callable[[], None]] = []
        self._load_source: Callable[[], float] | None = None
        self._end_listeners: list[Callable[[SessionInfo, SessionOutcome], None]] = []
        self._start_listeners: list[Callable[[SessionInfo], None]] = []
        self._admission_checks: list[AdmissionCheck] = []
        self._session_option_hooks: list[SessionOptionHook] = []
        self.transcripts: dict[str, Any] = {}

        for name, cls in (agents or {}).items():
            self.add(name, cls)
        self.tenant_breaker = tenancy.install(
            self,
            cfg.tenancy,
            isolation=self.isolation,
            emit=lambda *args, **kwargs: self.audit_log.emit(*args, **kwargs),
        )
        self.audit_sinks = open_sinks(self.audit_log, cfg.audit)
        """The stdout and HTTP audit outlets (None without --audit-stdout/--audit-url)."""
        if self.audit_sinks is not None and cfg.audit.spool_full == "refuse":
            self.add_admission_check(self._audit_backlog)

    def _audit_backlog(self, request: Any, agent: str, tenant: str) -> Refuse | None:
        """Refuse new calls while the audit spool is full, rather than drop records."""
        detail = None if self.audit_sinks is None else self.audit_sinks.backlog()
        return None if detail is None else Refuse(admission.RejectReason.AUDIT_BACKLOG, detail)

    # --- the settings most code asks for ---------------------------------------------------
    @property
    def deployment_version(self) -> str:
        return self.config.deployment.version

    @property
    def drain_timeout(self) -> float:
        return self.config.drain.timeout

    @property
    def isolation(self) -> Isolation:
        return self.config.runtime.isolation

    def update_config(self, group: str, **changes: Any) -> None:
        """Change some fields of one group before the worker starts (e.g. `openrtc dev`)."""
        self.reconfigure(self.config.replace(group, **changes))

    def reconfigure(self, config: PoolConfig) -> None:
        """Take new settings before the worker starts (command-line flags over a pool
        built in Python). Tenancy is installed when the pool is built, so it stays."""
        if self.registered:
            raise ConfigError("the worker is already serving; settings are fixed once it starts")
        if config.tenancy != self.config.tenancy:
            raise ConfigError(
                "tenancy settings of a pool built in Python are fixed when it is built; "
                "give them to AgentPool(config=...) instead of as flags or variables"
            )
        previous, self.config = self.config, config
        version = config.deployment.version
        if version != previous.deployment.version or config.audit != previous.audit:
            self.log = log_context.FieldsAdapter(logger, {"deployment_version": version})
            self.audit_log = AuditLog(
                version=version, sink=config.audit.sink, path=config.audit.path
            )

    def run(self, argv: list[str] | None = None) -> None:
        """Run this pool as a program: `python app.py start|dev|console|connect|download-files`.

        The same commands, flags and variables as the `openrtc` CLI; this pool's own
        settings are the base and flags given on the command line override them. Call it
        under `if __name__ == "__main__":` (job processes import the module again).
        """
        if _program is None:
            raise RuntimeError(
                "no command line is installed for pool.run(); import the pool from the "
                "`openrtc` package, which installs it"
            )
        _program(self, argv)

    # --- registration ---------------------------------------------------------------
    def add(
        self,
        name: str,
        agent_cls: type[Agent],
        *,
        stt: Any = None,
        llm: Any = None,
        tts: Any = None,
        greeting: str | None = None,
        session_kwargs: Mapping[str, Any] | None = None,
        source: Path | None = None,
    ) -> AgentSpec:
        validate_agent_class(str(name), agent_cls)
        return self.registry.add(
            AgentSpec(
                name=name,
                agent_cls=agent_cls,
                stt=stt,
                llm=llm,
                tts=tts,
                greeting=greeting,
                session_kwargs=MappingProxyType(dict(session_kwargs or {})),
                source=source,
            )
        )

    def discover(self, path: str | os.PathLike[str]) -> list[AgentSpec]:
        """Register one agent per `*.py` file in a directory (name: @agent_config or stem)."""
        specs = [spec_from_file(p) for p in agent_files(Path(path))]
        if not specs:
            raise RegistrationError(f"no agent files (*.py) found in {path}")
        return [self.registry.add(s) for s in specs]

    def list_agents(self) -> list[str]:
        return self.registry.names()

    def get(self, name: str) -> AgentSpec:
        return self.registry.get(name)

    def remove(self, name: str) -> AgentSpec:
        return self.registry.remove(name)

    def add_end_listener(self, listener: Callable[[SessionInfo, SessionOutcome], None]) -> None:
        """listener(info, outcome) on the worker's loop for every ended call."""
        self._end_listeners.append(listener)

    def add_start_listener(self, listener: Callable[[SessionInfo], None]) -> None:
        """listener(info) once per call, when it is first recorded live."""
        self._start_listeners.append(listener)

    def add_admission_check(self, check: AdmissionCheck) -> None:
        """check(request, agent, tenant) -> Refuse or None, run at offer time before caps."""
        self._admission_checks.append(check)

    def add_session_option_hook(self, hook: SessionOptionHook) -> None:
        """hook(spec, info, options) may edit the AgentSession options of one call."""
        self._session_option_hooks.append(hook)

    def add_load_listener(self, listener: Callable[[], None]) -> None:
        """listener() after the admitted calls or the state changed (any thread)."""
        self._load_listeners.append(listener)

    def set_load_source(self, source: Callable[[], float] | None) -> None:
        """source() -> this worker's measured load in [0, 1] (1.0: full), read from any
        thread; `exact_load()` reports the larger of it and admitted/cap."""
        self._load_source = source

    def load_changed(self) -> None:
        """The measured load moved enough to tell the server now (load listeners run)."""
        self._load_changed()

    def add_request_listener(self, listener: Callable[[], None]) -> None:
        """listener() after a drain, membership or registration was recorded (any thread,
        or a signal handler: it must only schedule work)."""
        self._request_listeners.append(listener)

    def add_observer(self, observer: SessionObserver) -> None:
        self.observers.append(observer)

    # --- providers for a session ----------------------------------------------------
    def session_options(self, spec: AgentSpec, info: SessionInfo | None = None) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        defaults = self.config.providers
        for slot, default in (
            ("stt", defaults.stt),
            ("llm", defaults.llm),
            ("tts", defaults.tts),
        ):
            value = getattr(spec, slot) if getattr(spec, slot) is not None else default
            if value is not None:
                opts[slot] = value
        opts.update(spec.session_kwargs)
        if info is not None:
            for hook in self._session_option_hooks:
                hook(spec, info, opts)
        return opts

    def greeting_for(self, spec: AgentSpec) -> str | None:
        return spec.greeting if spec.greeting is not None else self.config.providers.greeting

    # --- admission (runs on the worker's loop, synchronously) --------------------------
    def admission_state(self) -> WorkerState:
        """The state offers are judged by: a recorded request counts before it is applied."""
        state = self.lifecycle.state
        if self.drain_request is not None and state not in (
            WorkerState.DRAINED,
            WorkerState.STOPPED,
        ):
            return WorkerState.DRAINING
        if state is WorkerState.ACCEPTING and self.member is False:
            return WorkerState.NOT_MEMBER
        return state

    def decide(self, request: JobRequest) -> Admit | Refuse:
        job = request.job
        state = self.admission_state()
        tenant = routing.tenant_of(job)
        reason = admission.check(state, _NO_CALLS, _NO_CAPS, "", tenant)
        if reason is not None:
            return Refuse(reason, f"worker is {state}")
        if self.dispatch_down is not None:
            return Refuse(admission.RejectReason.DISPATCH_UNREACHABLE, self.dispatch_down)
        dispatch = self.config.dispatch
        try:
            route = routing.resolve(
                job, self.registry.names(), router=dispatch.router, request=request
            )
        except Exception as e:
            self.log.exception("router raised for job %s", job.id)
            return Refuse(admission.RejectReason.UNKNOWN_AGENT, f"router raised {e!r}")
        if not route.known or route.agent is None:
            return Refuse(
                admission.RejectReason.UNKNOWN_AGENT,
                f"job names agent {route.agent!r}, which this worker does not run",
            )
        if dispatch.accept_only_registered_rooms and not route.explicit:
            return Refuse(
                admission.RejectReason.UNREGISTERED_ROOM,
                "job does not name one of this pool's agents",
            )
        for check in self._admission_checks:
            refusal = check(request, route.agent, tenant)
            if refusal is not None:
                return refusal
        with self._lock:
            reason = admission.check(
                self.admission_state(), self._ledger, self.config.limits, route.agent, tenant
            )
            if reason is not None:
                return Refuse(reason, f"{self._ledger.total} calls admitted")
            self._ledger.admit(job.id, route.agent, tenant)
            self._routes[job.id] = route
        self._load_changed()
        return Admit(route, route.agent, tenant)

    def record_rejection(self, job_id: str, refusal: Refuse, room: str = "") -> None:
        """Count every refusal; log and audit it under the bounded-volume rule: a refusal
        repeated with the same reason from the same room within the audit's interval is
        counted into one `audit.refusals_repeated` record instead of being written again,
        so an outsider repeating an offer cannot fill the disk or the log."""
        reason = refusal.reason_name
        with self._lock:
            self._rejected[reason] += 1
        # an offer the worker could not even decide says nothing about its room: one source
        source = "dispatch" if reason == admission.RejectReason.INVALID_JOB else room
        record = self.audit_log.emit_refusal(
            "worker.rejected",
            reason=reason,
            source=source,
            target=job_id,
            job_id=job_id,
            detail=refusal.detail,
            room=room,
        )
        if record is None:
            return
        if reason == admission.RejectReason.INVALID_JOB:
            self.log.warning("refused job %r: %s (%s)", job_id, reason, refusal.detail)
        else:
            self.log.info("refused job %s: %s (%s)", job_id, reason, refusal.detail)

    def release(self, job_id: str) -> None:
        """Give back a call's slot: its offer fell through or the call ended."""
        with self._lock:
            released = self._ledger.release(job_id)
            self._routes.pop(job_id, None)
        if released:
            self._load_changed()

    def route_of(self, job_id: str) -> routing.Route | None:
        with self._lock:
            return self._routes.get(job_id)

    @property
    def admitted(self) -> int:
        return self._ledger.total

    def is_admitted(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._routes

    def exact_load(self) -> float:
        """Load reported to the server: the larger of admitted/cap and the measured load
        (the load source), and 1.0 (full) when not accepting or the dispatch link is down."""
        if not self.admission_state().takes_calls or self.dispatch_down is not None:
            return 1.0
        cap = self.config.limits.max_sessions
        load = 0.0 if cap is None else self._ledger.total / cap
        source = self._load_source
        if source is not None:
            try:
                load = max(load, float(source()))
            except Exception:
                self.log.exception("load source failed")
        return min(1.0, load)

    # --- calls ------------------------------------------------------------------------
    def session_info(self, job: lk_proto.Job, agent: str | None = None) -> SessionInfo | None:
        """What the pool knows of a job's call: its routed agent, tenant and metadata.

        `agent` is the agent decided at admission when the decision was handed over (a
        job process has no record of it); without it, the pool's own record or the job.
        """
        if agent is None:
            route = self.route_of(job.id) or routing.resolve(job, self.registry.names())
            agent = route.agent
        if agent is None or agent not in self.registry:
            return None
        metadata = routing.parse_metadata(job.metadata)
        return SessionInfo(
            job_id=job.id,
            agent=agent,
            room=job.room.name,
            tenant=routing.tenant_of(job),
            deployment_version=self.deployment_version,
            worker_id=self._worker_id,
            metadata=MappingProxyType(
                {k: v for k, v in metadata.items() if k not in _PRIVATE_METADATA}
            ),
            started_at=time.time(),
            simulated=SIMULATED_CALL_KEY in metadata,
        )

    def session_started(self, info: SessionInfo, session: Any = None) -> None:
        """Record a call as live (once), or attach its AgentSession when it exists.

        Observers hear of the call when its session exists, in the background; under
        process isolation the session lives in the job process, so they hear of it here
        (with no session) when the parent launches the job.
        """
        with self._lock:
            live = self._live.get(info.job_id)
            first = live is None
            if live is None:
                self._accepted_total += 1
                self._live[info.job_id] = LiveSession(info=info, session=session, status="live")
            elif session is not None:
                live.session = session
        if first:
            for listener in list(self._start_listeners):
                try:
                    listener(info)
                except Exception:
                    self.log.exception("session start listener failed")
        if session is not None or self.isolation == "process":
            self._deliveries.start(info, session)

    def record_crash(self, job_id: str, error: str) -> None:
        with self._lock:
            if job_id in self._ledger.by_job or job_id in self._live:
                self._crashes[job_id] = error

    def record_clean_end(self, job_id: str) -> None:
        """The call's session closed normally (the evidence a call ended SUCCESS)."""
        with self._lock:
            if job_id in self._ledger.by_job or job_id in self._live:
                self._clean_ends.add(job_id)

    def ended_cleanly(self, job_id: str) -> bool:
        return job_id in self._clean_ends

    def session_ended(self, job_id: str, status: Outcome, error: str | None, reason: str) -> None:
        """Called on the worker's loop when a call's job has fully closed."""
        with self._lock:
            live = self._live.pop(job_id, None)
            if live is not None:
                self._outcomes[status.value] += 1
        self.release(job_id)
        if live is None:
            return
        now = time.time()
        outcome = SessionOutcome(status, now, now - live.info.started_at, error, reason)
        self.log.info(
            "call %s (%s) ended %s after %.1fs%s",
            job_id,
            live.info.agent,
            status.value,
            outcome.duration_s,
            f": {error}" if error else "",
        )
        for listener in list(self._end_listeners):
            try:
                listener(live.info, outcome)
            except Exception:
                self.log.exception("session end listener failed")
        self._deliveries.end(live.info, outcome)

    async def flush_observers(self, timeout: float | None = None) -> list[SessionInfo]:
        """Wait (bounded) for observers' pending on_session_end calls; audit any abandoned.

        The worker's lifespan calls this before it exits, so the last calls of a
        drained worker reach every observer.
        """
        bound = self.config.drain.observer_flush_timeout if timeout is None else timeout
        abandoned = await self._deliveries.flush(bound)
        for info in abandoned:
            self.log.warning(
                "observers of call %s did not finish on_session_end within %.1fs; abandoned",
                info.job_id,
                bound,
            )
            self.audit_log.emit(
                "observer.delivery_abandoned",
                target=info.job_id,
                result="abandoned",
                job_id=info.job_id,
                agent=info.agent,
                flush_timeout=bound,
            )
        return abandoned

    def crash_of(self, job_id: str) -> str | None:
        return self._crashes.get(job_id)

    def forget_crash(self, job_id: str) -> None:
        """Called once the job's final status went out: the record is no longer needed."""
        with self._lock:
            self._crashes.pop(job_id, None)
            self._clean_ends.discard(job_id)

    def live_sessions(self) -> list[LiveSession]:
        with self._lock:
            return list(self._live.values())

    # --- lifecycle: requests recorded here, carried out by the lifespan ---------------------
    @property
    def state(self) -> WorkerState:
        return self.lifecycle.state

    @property
    def draining(self) -> bool:
        """A drain was requested or is under way: no new call will be taken."""
        return self.drain_request is not None or self.lifecycle.state.is_draining

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def begin_drain(self, reason: str = "requested", actor: str = "operator") -> None:
        """Stop taking new calls; live calls run to hang-up, then the worker exits.

        Only records the request (the first one wins) and wakes the worker's lifespan,
        which moves the state. Takes no lock, so it is safe from any thread and from a
        signal handler; offers are refused from the moment it returns.
        """
        if self.drain_request is None:
            self.drain_request = DrainRequest(reason, actor)
        self._requests_changed()

    def set_membership(self, member: bool, *, reason: str, actor: str = "manifest") -> None:
        """A manifest named (or stopped naming) this worker's version."""
        previous, self.member = self.member, member
        self.membership_reason = reason
        if previous != member:
            self.audit_log.emit(
                "membership.changed",
                actor=actor,
                target=self.deployment_version,
                member=member,
                reason=reason,
            )
            self._load_changed()
        self._requests_changed()

    def mark_registered(self, worker_id: str) -> None:
        """The server accepted our registration (again, after a reconnect)."""
        first = not self.registered
        self._worker_id = worker_id
        self.audit_log.worker_id = worker_id
        self.registered = True
        if first:
            self._started_at = time.time()
            self.audit_log.emit(
                "worker.started",
                target=worker_id,
                agents=self.registry.names(),
                isolation=self.isolation,
                max_concurrent_sessions=self.config.limits.max_sessions,
            )
        self._requests_changed()

    def record_dispatch_link(self, up: bool, reason: str = "") -> None:
        """The link to the dispatch server came up or went down (the server records it;
        the lifespan decides what an outage means). While it is down no offer is taken."""
        was_down = self.dispatch_down is not None
        if up:
            if not was_down:
                return
            since = self.dispatch_down_since
            self.dispatch_down = None
            self.dispatch_down_since = None
            outage = 0.0 if since is None else time.monotonic() - since
            self.log.info("dispatch link restored after %.1fs", outage)
            self.audit_log.emit(
                "dispatch.link_restored",
                target=self._worker_id,
                outage_s=round(outage, 3),
                active_sessions=self._ledger.total,
            )
        else:
            if was_down:
                self.dispatch_down = reason or self.dispatch_down
                return
            self.dispatch_down = reason or "dispatch server unreachable"
            self.dispatch_down_since = time.monotonic()
            self.audit_log.emit(
                "dispatch.link_lost",
                target=self._worker_id,
                result="lost",
                reason=self.dispatch_down,
                registered=self.registered,
                active_sessions=self._ledger.total,
            )
        self._load_changed()
        self._requests_changed()

    def _requests_changed(self) -> None:
        for listener in list(self._request_listeners):
            listener()

    def _on_transition(self, tr: Transition) -> None:
        event = {
            WorkerState.ACCEPTING: "worker.accepting",
            WorkerState.NOT_MEMBER: "worker.not_member",
            WorkerState.DRAINING: "deployment.drain_started",
            WorkerState.DRAINED: "deployment.drain_completed",
            WorkerState.STOPPED: "worker.stopped",
        }.get(tr.state, f"worker.{tr.state}")
        self.audit_log.emit(
            event,
            actor=tr.actor,
            target=self._worker_id,
            from_state=tr.previous.value,
            to_state=tr.state.value,
            reason=tr.reason,
            active_sessions=self._ledger.total,
        )
        self._load_changed()

    def _load_changed(self) -> None:
        for listener in list(self._load_listeners):
            try:
                listener()
            except Exception:
                self.log.exception("load listener failed")

    # --- observation --------------------------------------------------------------------
    def runtime_snapshot(self) -> RuntimeSnapshot:
        now = time.time()
        with self._lock:
            live = list(self._live.values())
            by_agent = Counter(s.info.agent for s in live)
            by_tenant = Counter(s.info.tenant for s in live)
            rejected = dict(self._rejected)
            outcomes = dict(self._outcomes)
            accepted = self._accepted_total
        state = self.lifecycle.state
        return RuntimeSnapshot(
            deployment_version=self.deployment_version,
            state=state.value,
            draining=self.draining,
            member=self.member,
            worker_id=self._worker_id,
            active_sessions=len(live),
            sessions_by_agent=MappingProxyType(dict(by_agent)),
            sessions_by_tenant=MappingProxyType(dict(by_tenant)),
            accepted_total=accepted,
            rejected_total=MappingProxyType(rejected),
            outcomes_total=MappingProxyType(outcomes),
            max_concurrent_sessions=self.config.limits.max_sessions,
            isolation=self.isolation,
            started_at=self._started_at,
            taken_at=now,
            pid=os.getpid(),
            agents=tuple(self.registry.names()),
            sessions=tuple(s.to_dict(now) for s in live),
            dispatch_reachable=self.dispatch_down is None,
            offer_answers=MappingProxyType(self.answer_times.to_dict()),
        )
