"""The pool flags shared by `start` and `dev`: one flag and one OPENRTC_* variable each.

Each flag is declared once, in `FLAGS`; `pool_flags` adds all of them to a command and
hands the command a `PoolFlags`. Precedence: a flag on the command line, then the
environment variable, then the default shown in `--help`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import ConfigError
from ..membership import load_secrets
from ..pool import DEFAULT_DRAIN_TIMEOUT, AgentPool

ISOLATIONS = ("coroutine", "thread", "process")
UNKNOWN_TENANT = ("refuse", "defaults")


@dataclass(frozen=True)
class PoolFlags:
    isolation: str = "coroutine"
    max_concurrent_sessions: int | None = None
    max_sessions_per_agent: int | None = None
    max_sessions_per_tenant: int | None = None
    deployment_version: str | None = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    agent_name: str = ""
    accept_only_registered_rooms: bool = False
    audit_path: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    manifest: str | None = None
    manifest_poll_interval: float = 5.0
    drain_when_not_member: bool = False
    metrics_jsonl: Path | None = None
    tenant_secret_file: Path | None = None
    unknown_tenant: str = "refuse"
    tenant_circuit_breaker: bool = False
    breaker_failures: int = 5
    breaker_window: float = 60.0
    breaker_cooldown: float = 30.0
    memory_warn_mb: float | None = None
    memory_limit_mb: float | None = None
    consecutive_failure_limit: int | None = None
    slow_call_threshold_ms: float | None = None
    shared_vad: bool | None = None
    metrics_jsonl_interval: float = 5.0
    session_close_timeout: float = 15.0
    prewarm_models: bool = True
    default_greeting: str | None = None
    membership_secret_file: Path | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("isolation", ISOLATIONS), ("unknown_tenant", UNKNOWN_TENANT)):
            value = getattr(self, name)
            if value not in allowed:
                raise typer.BadParameter(
                    f"{value!r} is not one of {', '.join(allowed)}.",
                    param_hint=f"'--{name.replace('_', '-')}'",
                )

    def tenant_secret(self) -> str | None:
        if self.tenant_secret_file is not None:
            try:
                return self.tenant_secret_file.read_text().strip() or None
            except OSError as e:
                raise ConfigError(
                    f"cannot read --tenant-secret-file {self.tenant_secret_file}: {e.strerror}"
                ) from None
        return os.environ.get("OPENRTC_TENANT_SECRET") or None

    def membership_secrets(self) -> Any:
        """The secrets in --membership-secret-file when a manifest is in use; None leaves
        them to the pool, which reads the environment only when it needs them."""
        path = self.membership_secret_file
        if path is None or self.manifest is None:
            return None
        if os.environ.get("OPENRTC_MEMBERSHIP_SECRET", "").strip():
            raise ConfigError(
                "both OPENRTC_MEMBERSHIP_SECRET and a membership secret file "
                "(--membership-secret-file or OPENRTC_MEMBERSHIP_SECRET_FILE) are set; "
                "set only one of them"
            )
        try:
            return load_secrets(path=path)
        except ValueError as e:
            raise ConfigError(f"--membership-secret-file: {e}") from None

    def build(self, agents_dir: Path) -> AgentPool:
        pool = AgentPool(
            isolation=self.isolation,  # type: ignore[arg-type]
            max_concurrent_sessions=self.max_concurrent_sessions,
            max_sessions_per_agent=self.max_sessions_per_agent,
            max_sessions_per_tenant=self.max_sessions_per_tenant,
            deployment_version=self.deployment_version,
            drain_timeout=self.drain_timeout,
            agent_name=self.agent_name,
            accept_only_registered_rooms=self.accept_only_registered_rooms,
            audit_path=self.audit_path,
            http_host=self.http_host,
            http_port=self.http_port,
            manifest=self.manifest,
            manifest_poll_interval=self.manifest_poll_interval,
            drain_when_not_member=self.drain_when_not_member,
            metrics_jsonl=self.metrics_jsonl,
            tenant_secret=self.tenant_secret(),
            unknown_tenant=self.unknown_tenant,  # type: ignore[arg-type]
            enable_tenant_circuit_breaker=self.tenant_circuit_breaker,
            tenant_breaker_failures=self.breaker_failures,
            tenant_breaker_window_s=self.breaker_window,
            tenant_breaker_cooldown_s=self.breaker_cooldown,
            memory_warn_mb=self.memory_warn_mb,
            memory_limit_mb=self.memory_limit_mb,
            consecutive_failure_limit=self.consecutive_failure_limit,
            slow_call_threshold_ms=self.slow_call_threshold_ms,
            shared_vad=self.shared_vad,
            metrics_jsonl_interval=self.metrics_jsonl_interval,
            session_close_timeout=self.session_close_timeout,
            prewarm_models=self.prewarm_models,
            default_greeting=self.default_greeting,
            membership_secrets=self.membership_secrets(),
        )
        pool.discover(agents_dir)
        return pool


DEFAULTS = PoolFlags()
"""What a command decorated with `pool_flags` gets when called without flags."""


@dataclass(frozen=True)
class Flag:
    """How one `PoolFlags` field appears on the command line."""

    decl: str
    envvar: str | tuple[str, ...]
    help: str
    min: float | None = None
    show_default: bool = True

    def option(self) -> Any:
        extra: dict[str, Any] = {} if self.min is None else {"min": self.min}
        return typer.Option(
            self.decl,
            envvar=self.envvar if isinstance(self.envvar, str) else list(self.envvar),
            help=self.help,
            show_default=self.show_default,
            **extra,
        )


FLAGS: dict[str, Flag] = {
    "isolation": Flag(
        "--isolation",
        "OPENRTC_ISOLATION",
        "How calls run: coroutine (asyncio tasks in this process, shared models), "
        "thread or process (livekit-agents' own executors).",
    ),
    "max_concurrent_sessions": Flag(
        "--max-concurrent-sessions",
        "OPENRTC_MAX_CONCURRENT_SESSIONS",
        "Exact cap on live calls; offers past it are refused at once. Default: no cap.",
        min=1,
    ),
    "max_sessions_per_agent": Flag(
        "--max-sessions-per-agent",
        "OPENRTC_MAX_SESSIONS_PER_AGENT",
        "Exact cap on live calls of any one agent.",
        min=1,
    ),
    "max_sessions_per_tenant": Flag(
        "--max-sessions-per-tenant",
        "OPENRTC_MAX_SESSIONS_PER_TENANT",
        "Exact cap on live calls of any one tenant (dispatch metadata 'tenant').",
        min=1,
    ),
    "deployment_version": Flag(
        "--deployment-version",
        "OPENRTC_DEPLOYMENT_VERSION",
        "Version tag of this build, shown in snapshots, logs, metrics and audit events.",
    ),
    "drain_timeout": Flag(
        "--drain-timeout",
        "OPENRTC_DRAIN_TIMEOUT",
        "Seconds a drain waits for live calls before cutting them (exit code 3).",
        min=0.001,
    ),
    "agent_name": Flag(
        "--agent-name",
        ("OPENRTC_AGENT_NAME", "LIVEKIT_AGENT_NAME"),
        "Register for explicit dispatch under this name (empty: automatic dispatch).",
    ),
    "accept_only_registered_rooms": Flag(
        "--accept-only-registered-rooms/--accept-any-room",
        "OPENRTC_ACCEPT_ONLY_REGISTERED_ROOMS",
        "Accept only jobs that name one of this pool's agents (no fallback agent).",
    ),
    "audit_path": Flag(
        "--audit-path",
        "OPENRTC_AUDIT_PATH",
        "Append audit events to this hash-chained JSON Lines file.",
    ),
    "http_host": Flag(
        "--http-host",
        "OPENRTC_HTTP_HOST",
        "Bind address of the operations endpoint (loopback unless you need more).",
    ),
    "http_port": Flag(
        "--http-port",
        "OPENRTC_HTTP_PORT",
        "Port of /healthz, /readyz, /metrics, /snapshot and POST /drain (0: any free; "
        "unset: no endpoint).",
    ),
    "manifest": Flag(
        "--manifest",
        "OPENRTC_MANIFEST",
        "Signed manifest of active versions (file path or http(s) URL), polled; the "
        "secret comes from OPENRTC_MEMBERSHIP_SECRET(_FILE).",
    ),
    "manifest_poll_interval": Flag(
        "--manifest-poll-interval",
        "OPENRTC_MANIFEST_POLL_INTERVAL",
        "Seconds between manifest reads.",
        min=0.05,
    ),
    "drain_when_not_member": Flag(
        "--drain-when-not-member/--wait-when-not-member",
        "OPENRTC_DRAIN_WHEN_NOT_MEMBER",
        "When the manifest drops this version: drain and exit, or wait for a rollback.",
    ),
    "metrics_jsonl": Flag(
        "--metrics-jsonl",
        "OPENRTC_METRICS_JSONL",
        "Append snapshots (every --metrics-jsonl-interval) and call start/end events here, "
        "one JSON a line.",
    ),
    "metrics_jsonl_interval": Flag(
        "--metrics-jsonl-interval",
        "OPENRTC_METRICS_JSONL_INTERVAL",
        "Seconds between snapshots in the --metrics-jsonl file.",
        min=0.05,
    ),
    "tenant_secret_file": Flag(
        "--tenant-secret-file",
        "OPENRTC_TENANT_SECRET_FILE",
        "Accept only calls whose metadata carries a valid tenant_sig made with this "
        "secret (also OPENRTC_TENANT_SECRET).",
    ),
    "unknown_tenant": Flag(
        "--unknown-tenant",
        "OPENRTC_UNKNOWN_TENANT",
        "A tenant missing from tenant_config: refuse its calls, or use the defaults.",
    ),
    "tenant_circuit_breaker": Flag(
        "--tenant-circuit-breaker/--no-tenant-circuit-breaker",
        "OPENRTC_TENANT_CIRCUIT_BREAKER",
        "Refuse a tenant's new calls for a cooldown after repeated failed calls.",
    ),
    "breaker_failures": Flag(
        "--breaker-failures",
        "OPENRTC_BREAKER_FAILURES",
        "Failed calls within the window that open a tenant's breaker.",
        min=1,
    ),
    "breaker_window": Flag(
        "--breaker-window",
        "OPENRTC_BREAKER_WINDOW_S",
        "Seconds over which failures are counted.",
        min=0.1,
    ),
    "breaker_cooldown": Flag(
        "--breaker-cooldown",
        "OPENRTC_BREAKER_COOLDOWN_S",
        "Seconds an open breaker refuses the tenant before one trial call.",
        min=0.1,
    ),
    "memory_warn_mb": Flag(
        "--memory-warn-mb",
        "OPENRTC_MEMORY_WARN_MB",
        "Log a warning when the worker's USS crosses this many MiB.",
        min=1,
    ),
    "memory_limit_mb": Flag(
        "--memory-limit-mb",
        "OPENRTC_MEMORY_LIMIT_MB",
        "Drain (never cut calls) when the worker's USS crosses this many MiB.",
        min=1,
    ),
    "consecutive_failure_limit": Flag(
        "--consecutive-failure-limit",
        "OPENRTC_CONSECUTIVE_FAILURE_LIMIT",
        "Drain after this many failed calls in a row.",
        min=1,
    ),
    "slow_call_threshold_ms": Flag(
        "--slow-call-threshold-ms",
        "OPENRTC_SLOW_CALL_THRESHOLD_MS",
        "Log the call whose code blocks the event loop longer than this.",
        min=1,
    ),
    "session_close_timeout": Flag(
        "--session-close-timeout",
        "OPENRTC_SESSION_CLOSE_TIMEOUT",
        "Seconds a hung-up call may take to close its session before it is cut.",
        min=0.1,
    ),
    "prewarm_models": Flag(
        "--prewarm-models/--no-prewarm-models",
        "OPENRTC_PREWARM_MODELS",
        "Load the VAD and end-of-turn models at start, once, for every call. Off: each "
        "agent brings its own (its session_kwargs), and none are loaded.",
    ),
    "default_greeting": Flag(
        "--default-greeting",
        "OPENRTC_DEFAULT_GREETING",
        "What an agent without its own greeting says when a call starts (default: "
        "nothing; the caller speaks first).",
    ),
    "membership_secret_file": Flag(
        "--membership-secret-file",
        "OPENRTC_MEMBERSHIP_SECRET_FILE",
        "File with the manifest's signing secret(s), one per line, or kid:secret lines "
        "(also OPENRTC_MEMBERSHIP_SECRET).",
    ),
    "shared_vad": Flag(
        "--shared-vad/--no-shared-vad",
        "OPENRTC_SHARED_VAD",
        "One batched Silero VAD for every call in the process (much less CPU per call). "
        "Default: on with --isolation coroutine, off otherwise.",
        show_default=False,
    ),
}

F = TypeVar("F", bound=Callable[..., Any])


def _parameters(defaults: dict[str, Any]) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(PoolFlags)
    params = []
    for f in dataclasses.fields(PoolFlags):
        default = defaults.get(f.name, f.default)
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[hints[f.name], FLAGS[f.name].option()],
            )
        )
    return params


def pool_flags(**defaults: Any) -> Callable[[F], F]:
    """Give a typer command every pool flag; it receives them as `flags: PoolFlags`.

    `defaults` overrides a flag's default for this command (e.g. `http_port=8081`).
    """
    unknown = set(defaults) - set(FLAGS)
    if unknown:
        raise TypeError(f"not pool flags: {', '.join(sorted(unknown))}")

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for name, p in sig.parameters.items() if name != "flags"]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in FLAGS}
            return fn(**kwargs, flags=PoolFlags(**values))

        params = [
            *(p for p in own if p.default is inspect.Parameter.empty),
            *(
                p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                for p in own
                if p.default is not inspect.Parameter.empty
            ),
            *_parameters(defaults),
        ]
        del command.__wrapped__  # type: ignore[attr-defined]
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return wrap
