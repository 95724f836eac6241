"""AgentPool: many standard LiveKit agents served by one worker.

The pool holds the registry (which agents exist), the admission rules (which calls this
worker takes), and the runtime record of the calls it runs. `worker/` turns it into a
running LiveKit worker; `openrtc.cli` runs that worker as a process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from livekit.agents import Agent, JobRequest
from livekit.protocol import agent as lk_proto

from . import admission, log_context, routing
from .audit import AuditEvent, AuditLog
from .errors import ConfigError, RegistrationError
from .lifecycle import Lifecycle, Transition, WorkerState
from .lifecycle import logger as lifecycle_logger
from .registry import AgentSpec, Registry, agent_files, spec_from_file, validate_agent_class
from .sessions import LiveSession, Outcome, SessionInfo, SessionObserver, SessionOutcome, notify
from .simulation.script import SIMULATED_CALL_KEY
from .snapshot import RuntimeSnapshot

if TYPE_CHECKING:
    from .worker.server import PoolServer

logger = logging.getLogger("openrtc.pool")

Isolation = Literal["coroutine", "thread", "process"]
ISOLATIONS: tuple[Isolation, ...] = ("coroutine", "thread", "process")
DEFAULT_DRAIN_TIMEOUT = 1800.0
DEFAULT_VERSION = "unversioned"
_PRIVATE_METADATA = frozenset({SIMULATED_CALL_KEY, "tenant_sig"})
"""Metadata the worker consumes and does not pass on to agents and observers."""


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1/true/on or 0/false/off")


@dataclass(frozen=True)
class Admit:
    route: routing.Route
    agent: str
    tenant: str


@dataclass(frozen=True)
class Refuse:
    reason: admission.RejectReason | str
    detail: str

    @property
    def reason_name(self) -> str:
        return str(getattr(self.reason, "value", self.reason))


AdmissionCheck = Callable[[JobRequest, str, str], Refuse | None]
SessionOptionHook = Callable[[AgentSpec, SessionInfo, dict[str, Any]], None]


class AgentPool:
    """Register plain `livekit.agents.Agent` subclasses; one worker serves them all."""

    def __init__(
        self,
        agents: Mapping[str, type[Agent]] | None = None,
        *,
        agent: type[Agent] | None = None,
        default_stt: Any = None,
        default_llm: Any = None,
        default_tts: Any = None,
        default_greeting: str | None = None,
        isolation: Isolation = "coroutine",
        max_concurrent_sessions: int | None = None,
        max_sessions_per_agent: int | None = None,
        max_sessions_per_tenant: int | None = None,
        deployment_version: str | None = None,
        drain_timeout: float | None = None,
        router: routing.Router | None = None,
        request_fnc: Callable[[JobRequest], Any] | None = None,
        accept_only_registered_rooms: bool = False,
        agent_name: str = "",
        observers: Iterable[SessionObserver] = (),
        audit_sink: Callable[[AuditEvent], None] | None = None,
        audit_path: str | os.PathLike[str] | None = None,
        prewarm_models: bool = True,
        shared_vad: bool | None = None,
        session_close_timeout: float = 15.0,
        manifest: str | os.PathLike[str] | None = None,
        membership_secrets: Any = None,
        manifest_poll_interval: float | None = None,
        drain_when_not_member: bool = False,
        http_host: str | None = None,
        http_port: int | None = None,
        tenant_secret: str | bytes | None = None,
        tenant_config: Mapping[str, Mapping[str, Any]] | Callable[[str], Any] | None = None,
        unknown_tenant: Literal["refuse", "defaults"] = "refuse",
        enable_tenant_circuit_breaker: bool = False,
        tenant_breaker_failures: int = 5,
        tenant_breaker_window_s: float = 60.0,
        tenant_breaker_cooldown_s: float = 30.0,
        memory_warn_mb: float | None = None,
        memory_limit_mb: float | None = None,
        consecutive_failure_limit: int | None = None,
        slow_call_threshold_ms: float | None = None,
        metrics_jsonl: str | os.PathLike[str] | None = None,
        metrics_jsonl_interval: float = 5.0,
        enable_hot_reload: bool = False,
        watch_paths: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ConfigError(
                f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}"
            )
        for flag, value in (
            ("max_concurrent_sessions", max_concurrent_sessions),
            ("max_sessions_per_agent", max_sessions_per_agent),
            ("max_sessions_per_tenant", max_sessions_per_tenant),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{flag} must be a whole number of at least 1, got {value!r}")
        version = deployment_version or os.environ.get("OPENRTC_DEPLOYMENT_VERSION") or ""
        self.deployment_version = version.strip() or DEFAULT_VERSION
        timeout = (
            drain_timeout if drain_timeout is not None else _env_float("OPENRTC_DRAIN_TIMEOUT")
        )
        self.drain_timeout = DEFAULT_DRAIN_TIMEOUT if timeout is None else float(timeout)
        if not self.drain_timeout > 0:
            raise ConfigError(f"drain_timeout must be a positive number of seconds, got {timeout}")

        self.registry = Registry()
        self.default_stt = default_stt
        self.default_llm = default_llm
        self.default_tts = default_tts
        self.default_greeting = default_greeting
        self.isolation: Isolation = isolation
        self.caps = admission.Caps(
            max_concurrent_sessions, max_sessions_per_agent, max_sessions_per_tenant
        )
        self.router = router
        self.request_fnc = request_fnc
        self.accept_only_registered_rooms = accept_only_registered_rooms
        self.agent_name = agent_name
        self.observers: list[SessionObserver] = list(observers)
        self.prewarm_models = prewarm_models
        if shared_vad is None:
            shared_vad = _env_bool("OPENRTC_SHARED_VAD")
        self.shared_vad: bool = isolation == "coroutine" if shared_vad is None else shared_vad
        """One batched VAD serves every call (openrtc.vad.SharedVAD); default: coroutine."""
        self.session_close_timeout = session_close_timeout

        self.manifest = manifest or os.environ.get("OPENRTC_MANIFEST") or None
        self.membership_secrets = membership_secrets
        interval = manifest_poll_interval
        if interval is None:
            interval = _env_float("OPENRTC_MANIFEST_POLL_INTERVAL")
        self.manifest_poll_interval = 5.0 if interval is None else float(interval)
        self.drain_when_not_member = drain_when_not_member
        self.http_host = http_host or os.environ.get("OPENRTC_HTTP_HOST") or "127.0.0.1"
        port = http_port if http_port is not None else _env_float("OPENRTC_HTTP_PORT")
        self.http_port = None if port is None else int(port)

        self.tenant_secret = tenant_secret
        self.tenant_config = tenant_config
        self.unknown_tenant = unknown_tenant
        self.enable_tenant_circuit_breaker = enable_tenant_circuit_breaker
        self.tenant_breaker_failures = tenant_breaker_failures
        self.tenant_breaker_window_s = tenant_breaker_window_s
        self.tenant_breaker_cooldown_s = tenant_breaker_cooldown_s
        self.memory_warn_mb = memory_warn_mb
        self.memory_limit_mb = memory_limit_mb
        self.consecutive_failure_limit = consecutive_failure_limit
        self.slow_call_threshold_ms = slow_call_threshold_ms
        jsonl = metrics_jsonl or os.environ.get("OPENRTC_METRICS_JSONL") or None
        self.metrics_jsonl = None if jsonl is None else Path(jsonl)
        self.metrics_jsonl_interval = metrics_jsonl_interval
        self.enable_hot_reload = enable_hot_reload
        self.watch_paths = [Path(p) for p in watch_paths]

        self.log = log_context.FieldsAdapter(
            logger, {"deployment_version": self.deployment_version}
        )
        self.lifecycle = Lifecycle(
            log=log_context.FieldsAdapter(
                lifecycle_logger, {"deployment_version": self.deployment_version}
            )
        )
        self.lifecycle.subscribe(self._on_transition)
        self.audit_log = AuditLog(version=self.deployment_version, sink=audit_sink, path=audit_path)
        self.member: bool | None = None

        self._lock = threading.Lock()
        self._ledger = admission.Ledger()
        self._live: dict[str, LiveSession] = {}
        self._routes: dict[str, routing.Route] = {}
        self._crashes: dict[str, str] = {}
        self._accepted_total = 0
        self._rejected: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._started_at = time.time()
        self._worker_id = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: PoolServer | None = None
        self._drain_requested: asyncio.Event | None = None
        self._drain_listeners: list[Callable[[], None]] = []
        self._end_listeners: list[Callable[[SessionInfo, SessionOutcome], None]] = []
        self._start_listeners: list[Callable[[SessionInfo], None]] = []
        self._admission_checks: list[AdmissionCheck] = []
        self._session_option_hooks: list[SessionOptionHook] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self.transcripts: dict[str, Any] = {}

        if agent is not None:
            self.add(getattr(agent, "__name__", "agent").lower(), agent)
        for name, cls in (agents or {}).items():
            self.add(name, cls)
        from . import tenancy

        self.tenant_breaker = tenancy.install(self)

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

    def add_observer(self, observer: SessionObserver) -> None:
        self.observers.append(observer)

    # --- providers for a session ----------------------------------------------------
    def session_options(self, spec: AgentSpec, info: SessionInfo | None = None) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        for slot, default in (
            ("stt", self.default_stt),
            ("llm", self.default_llm),
            ("tts", self.default_tts),
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
        return spec.greeting if spec.greeting is not None else self.default_greeting

    # --- admission (runs on the worker's loop, synchronously) --------------------------
    def decide(self, request: JobRequest) -> Admit | Refuse:
        job = request.job
        state = self.lifecycle.state
        tenant = routing.tenant_of(job)
        reason = admission.check(state, admission.Ledger(), admission.Caps(), "", tenant)
        if reason is not None:
            return Refuse(reason, f"worker is {state}")
        try:
            route = routing.resolve(job, self.registry.names(), router=self.router, request=request)
        except Exception as e:
            self.log.exception("router raised for job %s", job.id)
            return Refuse(admission.RejectReason.UNKNOWN_AGENT, f"router raised {e!r}")
        if not route.known or route.agent is None:
            return Refuse(
                admission.RejectReason.UNKNOWN_AGENT,
                f"job names agent {route.agent!r}, which this worker does not run",
            )
        if self.accept_only_registered_rooms and not route.explicit:
            return Refuse(
                admission.RejectReason.UNREGISTERED_ROOM,
                "job does not name one of this pool's agents",
            )
        for check in self._admission_checks:
            refusal = check(request, route.agent, tenant)
            if refusal is not None:
                return refusal
        with self._lock:
            reason = admission.check(state, self._ledger, self.caps, route.agent, tenant)
            if reason is not None:
                return Refuse(reason, f"{self._ledger.total} calls admitted")
            self._ledger.admit(job.id, route.agent, tenant)
            self._routes[job.id] = route
        self._after_ledger_change()
        return Admit(route, route.agent, tenant)

    def record_rejection(self, job_id: str, refusal: Refuse, room: str = "") -> None:
        with self._lock:
            self._rejected[refusal.reason_name] += 1
        self.log.info("refused job %s: %s (%s)", job_id, refusal.reason_name, refusal.detail)
        self.audit_log.emit(
            "worker.rejected",
            target=job_id,
            result="refused",
            job_id=job_id,
            reason=refusal.reason_name,
            detail=refusal.detail,
            room=room,
        )

    def release(self, job_id: str) -> None:
        """Give back a call's slot: its offer fell through or the call ended."""
        with self._lock:
            released = self._ledger.release(job_id)
            self._routes.pop(job_id, None)
        if released:
            self._after_ledger_change()

    def route_of(self, job_id: str) -> routing.Route | None:
        with self._lock:
            return self._routes.get(job_id)

    @property
    def admitted(self) -> int:
        return self._ledger.total

    def exact_load(self) -> float:
        """Load reported to the server: admitted/cap, and 1.0 (full) when not accepting."""
        if not self.lifecycle.state.takes_calls:
            return 1.0
        cap = self.caps.max_sessions
        if cap is None:
            return 0.0
        return min(1.0, self._ledger.total / cap)

    # --- calls ------------------------------------------------------------------------
    def session_info(self, job: lk_proto.Job) -> SessionInfo | None:
        """What the pool knows of a job's call: its routed agent, tenant and metadata."""
        route = self.route_of(job.id) or routing.resolve(job, self.registry.names())
        if route.agent is None or route.agent not in self.registry:
            return None
        metadata = routing.parse_metadata(job.metadata)
        return SessionInfo(
            job_id=job.id,
            agent=route.agent,
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
        """Record a call as live (once), or attach its AgentSession when it exists."""
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

    def record_crash(self, job_id: str, error: str) -> None:
        with self._lock:
            if job_id in self._ledger.by_job or job_id in self._live:
                self._crashes[job_id] = error

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
        if self.observers:
            self._spawn(notify(self.observers, "on_session_end", live.info, outcome))

    def crash_of(self, job_id: str) -> str | None:
        return self._crashes.get(job_id)

    def forget_crash(self, job_id: str) -> None:
        """Called once the job's final status went out: the record is no longer needed."""
        with self._lock:
            self._crashes.pop(job_id, None)

    def live_sessions(self) -> list[LiveSession]:
        with self._lock:
            return list(self._live.values())

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def state(self) -> WorkerState:
        return self.lifecycle.state

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def set_worker_id(self, worker_id: str) -> None:
        self._worker_id = worker_id
        self.audit_log.worker_id = worker_id

    def begin_drain(self, reason: str = "requested", actor: str = "operator") -> None:
        """Stop taking new calls; live calls run to hang-up, then the worker exits.

        Idempotent, and safe from any thread and from a signal handler. Off the loop, or
        while one of the locks a drain takes is held (a handler may have interrupted its
        holder on this very thread), the drain is handed to the loop instead of waiting.
        """
        loop = self._loop
        if loop is not None and loop.is_running() and (not _on_loop(loop) or self._busy()):
            loop.call_soon_threadsafe(self._start_drain, reason, actor)
            return
        self._start_drain(reason, actor)

    def _busy(self) -> bool:
        return self._lock.locked() or self.lifecycle.busy() or self.audit_log.busy()

    def _start_drain(self, reason: str, actor: str) -> None:
        if not self.lifecycle.can_move(WorkerState.DRAINING):
            return
        self.lifecycle.move(WorkerState.DRAINING, reason=reason, actor=actor)
        if self._drain_requested is not None:
            self._drain_requested.set()
        for listener in list(self._drain_listeners):
            listener()

    def on_drain(self, listener: Callable[[], None]) -> None:
        self._drain_listeners.append(listener)

    def set_membership(self, member: bool, *, reason: str, actor: str = "manifest") -> None:
        """A manifest named (or stopped naming) this worker's version."""
        previous, self.member = self.member, member
        state = self.lifecycle.state
        if member and state is WorkerState.NOT_MEMBER:
            self.lifecycle.move(WorkerState.ACCEPTING, reason=reason, actor=actor)
        elif not member and state in (WorkerState.ACCEPTING, WorkerState.STARTING):
            self.lifecycle.move(WorkerState.NOT_MEMBER, reason=reason, actor=actor)
        if previous != member:
            self.audit_log.emit(
                "membership.changed",
                actor=actor,
                target=self.deployment_version,
                member=member,
                reason=reason,
            )
            self._after_ledger_change(force=True)

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
        self._after_ledger_change(force=True)

    def _after_ledger_change(self, force: bool = False) -> None:
        server = self._server
        loop = self._loop
        if server is None or loop is None or not loop.is_running():
            return
        if _on_loop(loop):
            self._spawn(server.push_worker_status())
        else:
            loop.call_soon_threadsafe(lambda: self._spawn(server.push_worker_status()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

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
            draining=state.is_draining,
            member=self.member,
            worker_id=self._worker_id,
            active_sessions=len(live),
            sessions_by_agent=MappingProxyType(dict(by_agent)),
            sessions_by_tenant=MappingProxyType(dict(by_tenant)),
            accepted_total=accepted,
            rejected_total=MappingProxyType(rejected),
            outcomes_total=MappingProxyType(outcomes),
            max_concurrent_sessions=self.caps.max_sessions,
            isolation=self.isolation,
            started_at=self._started_at,
            taken_at=now,
            pid=os.getpid(),
            agents=tuple(self.registry.names()),
            sessions=tuple(s.to_dict(now) for s in live),
        )

    # --- running ------------------------------------------------------------------------
    def build_server(
        self,
        *,
        ws_url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
    ) -> PoolServer:
        """The livekit AgentServer that serves this pool (one per pool run)."""
        from .worker.server import PoolServer

        if not len(self.registry):
            raise ConfigError("the pool has no agents; add one with pool.add() or discover()")
        if self._server is not None and not self.lifecycle.state == WorkerState.STOPPED:
            raise ConfigError("this pool is already serving; build one worker per pool")
        self._server = PoolServer(self, ws_url=ws_url, api_key=api_key, api_secret=api_secret)
        return self._server

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._drain_requested = asyncio.Event()
        if self.lifecycle.state.is_draining:
            self._drain_requested.set()

    async def wait_drain_requested(self) -> None:
        assert self._drain_requested is not None, "attach_loop() first"
        await self._drain_requested.wait()

    def mark_started(self) -> None:
        """The worker registered with the server: it takes calls unless told otherwise."""
        self._started_at = time.time()
        self.audit_log.emit(
            "worker.started",
            target=self._worker_id,
            agents=self.registry.names(),
            isolation=self.isolation,
            max_concurrent_sessions=self.caps.max_sessions,
        )
        if self.lifecycle.state is WorkerState.STARTING:
            if self.member is False:
                self.lifecycle.move(WorkerState.NOT_MEMBER, reason="not in manifest")
            else:
                self.lifecycle.move(WorkerState.ACCEPTING, reason="registered")


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
