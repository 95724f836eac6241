"""The pool flags shared by `start` and `dev`: one flag and one OPENRTC_* variable each.

Precedence: a flag on the command line, then the environment variable, then the default
shown in `--help`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..pool import DEFAULT_DRAIN_TIMEOUT, AgentPool

Isolation = Annotated[
    str,
    typer.Option(
        "--isolation",
        envvar="OPENRTC_ISOLATION",
        help="How calls run: coroutine (asyncio tasks in this process, shared models), "
        "thread or process (livekit-agents' own executors).",
    ),
]
MaxSessions = Annotated[
    int | None,
    typer.Option(
        "--max-concurrent-sessions",
        envvar="OPENRTC_MAX_CONCURRENT_SESSIONS",
        min=1,
        help="Exact cap on live calls; offers past it are refused at once. Default: no cap.",
    ),
]
MaxPerAgent = Annotated[
    int | None,
    typer.Option(
        "--max-sessions-per-agent",
        envvar="OPENRTC_MAX_SESSIONS_PER_AGENT",
        min=1,
        help="Exact cap on live calls of any one agent.",
    ),
]
MaxPerTenant = Annotated[
    int | None,
    typer.Option(
        "--max-sessions-per-tenant",
        envvar="OPENRTC_MAX_SESSIONS_PER_TENANT",
        min=1,
        help="Exact cap on live calls of any one tenant (dispatch metadata 'tenant').",
    ),
]
Version = Annotated[
    str | None,
    typer.Option(
        "--deployment-version",
        envvar="OPENRTC_DEPLOYMENT_VERSION",
        help="Version tag of this build, shown in snapshots, logs, metrics and audit events.",
    ),
]
DrainTimeout = Annotated[
    float,
    typer.Option(
        "--drain-timeout",
        envvar="OPENRTC_DRAIN_TIMEOUT",
        min=0.001,
        help="Seconds a drain waits for live calls before cutting them (exit code 3).",
    ),
]
AgentName = Annotated[
    str,
    typer.Option(
        "--agent-name",
        envvar="LIVEKIT_AGENT_NAME",
        help="Register for explicit dispatch under this name (empty: automatic dispatch).",
    ),
]
OnlyRegistered = Annotated[
    bool,
    typer.Option(
        "--accept-only-registered-rooms/--accept-any-room",
        envvar="OPENRTC_ACCEPT_ONLY_REGISTERED_ROOMS",
        help="Accept only jobs that name one of this pool's agents (no fallback agent).",
    ),
]
AuditPath = Annotated[
    Path | None,
    typer.Option(
        "--audit-path",
        envvar="OPENRTC_AUDIT_PATH",
        help="Append audit events to this hash-chained JSON Lines file.",
    ),
]

HttpHost = Annotated[
    str,
    typer.Option(
        "--http-host",
        envvar="OPENRTC_HTTP_HOST",
        help="Bind address of the operations endpoint (loopback unless you need more).",
    ),
]
HttpPort = Annotated[
    int | None,
    typer.Option(
        "--http-port",
        envvar="OPENRTC_HTTP_PORT",
        help="Port of /healthz, /readyz, /metrics, /snapshot and POST /drain (0: any free).",
    ),
]
Manifest = Annotated[
    str | None,
    typer.Option(
        "--manifest",
        envvar="OPENRTC_MANIFEST",
        help="Signed manifest of active versions (file path or http(s) URL), polled; the "
        "secret comes from OPENRTC_MEMBERSHIP_SECRET(_FILE).",
    ),
]
ManifestInterval = Annotated[
    float,
    typer.Option(
        "--manifest-poll-interval",
        envvar="OPENRTC_MANIFEST_POLL_INTERVAL",
        min=0.05,
        help="Seconds between manifest reads.",
    ),
]
DrainWhenNotMember = Annotated[
    bool,
    typer.Option(
        "--drain-when-not-member/--wait-when-not-member",
        envvar="OPENRTC_DRAIN_WHEN_NOT_MEMBER",
        help="When the manifest drops this version: drain and exit, or wait for a rollback.",
    ),
]

SharedVad = Annotated[
    bool | None,
    typer.Option(
        "--shared-vad/--no-shared-vad",
        envvar="OPENRTC_SHARED_VAD",
        show_default=False,
        help="One batched Silero VAD for every call in the process (much less CPU per "
        "call). Default: on with --isolation coroutine, off otherwise.",
    ),
]
MetricsJsonlPath = Annotated[
    Path | None,
    typer.Option(
        "--metrics-jsonl",
        envvar="OPENRTC_METRICS_JSONL",
        help="Append snapshots (every 5 s) and call start/end events here, one JSON a line.",
    ),
]

TenantSecretFile = Annotated[
    Path | None,
    typer.Option(
        "--tenant-secret-file",
        envvar="OPENRTC_TENANT_SECRET_FILE",
        help="Accept only calls whose metadata carries a valid tenant_sig made with this "
        "secret (also OPENRTC_TENANT_SECRET).",
    ),
]
UnknownTenant = Annotated[
    str,
    typer.Option(
        "--unknown-tenant",
        envvar="OPENRTC_UNKNOWN_TENANT",
        help="A tenant missing from tenant_config: refuse its calls, or use the defaults.",
    ),
]
TenantBreaker = Annotated[
    bool,
    typer.Option(
        "--tenant-circuit-breaker/--no-tenant-circuit-breaker",
        envvar="OPENRTC_TENANT_CIRCUIT_BREAKER",
        help="Refuse a tenant's new calls for a cooldown after repeated failed calls.",
    ),
]
BreakerFailures = Annotated[
    int,
    typer.Option(
        "--breaker-failures",
        envvar="OPENRTC_BREAKER_FAILURES",
        min=1,
        help="Failed calls within the window that open a tenant's breaker.",
    ),
]
BreakerWindow = Annotated[
    float,
    typer.Option(
        "--breaker-window",
        envvar="OPENRTC_BREAKER_WINDOW_S",
        min=0.1,
        help="Seconds over which failures are counted.",
    ),
]
BreakerCooldown = Annotated[
    float,
    typer.Option(
        "--breaker-cooldown",
        envvar="OPENRTC_BREAKER_COOLDOWN_S",
        min=0.1,
        help="Seconds an open breaker refuses the tenant before one trial call.",
    ),
]
MemoryWarn = Annotated[
    float | None,
    typer.Option(
        "--memory-warn-mb",
        envvar="OPENRTC_MEMORY_WARN_MB",
        min=1,
        help="Log a warning when the worker's USS crosses this many MiB.",
    ),
]
MemoryLimit = Annotated[
    float | None,
    typer.Option(
        "--memory-limit-mb",
        envvar="OPENRTC_MEMORY_LIMIT_MB",
        min=1,
        help="Drain (never cut calls) when the worker's USS crosses this many MiB.",
    ),
]
FailureLimit = Annotated[
    int | None,
    typer.Option(
        "--consecutive-failure-limit",
        envvar="OPENRTC_CONSECUTIVE_FAILURE_LIMIT",
        min=1,
        help="Drain after this many failed calls in a row.",
    ),
]
SlowCall = Annotated[
    float | None,
    typer.Option(
        "--slow-call-threshold-ms",
        envvar="OPENRTC_SLOW_CALL_THRESHOLD_MS",
        min=1,
        help="Log the call whose code blocks the event loop longer than this.",
    ),
]


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

    def tenant_secret(self) -> str | None:
        if self.tenant_secret_file is not None:
            try:
                return self.tenant_secret_file.read_text().strip() or None
            except OSError as e:
                raise ConfigError(
                    f"cannot read --tenant-secret-file {self.tenant_secret_file}: {e.strerror}"
                ) from None
        return os.environ.get("OPENRTC_TENANT_SECRET") or None

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
        )
        pool.discover(agents_dir)
        return pool
