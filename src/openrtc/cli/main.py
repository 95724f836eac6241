"""The `openrtc` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import OpenRTCError
from ..pool import DEFAULT_DRAIN_TIMEOUT
from . import pool_options as po
from .logs import setup_logging

app = typer.Typer(
    name="openrtc",
    help="Run many LiveKit voice agents in one worker, and deploy them without dropping calls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

AgentsDir = Annotated[
    Path,
    typer.Argument(help="Directory with one agent per *.py file.", show_default=False),
]
LogLevel = Annotated[
    str,
    typer.Option("--log-level", envvar="OPENRTC_LOG_LEVEL", help="DEBUG, INFO, WARNING, ERROR."),
]
LogFormat = Annotated[
    str,
    typer.Option("--log-format", envvar="OPENRTC_LOG_FORMAT", help="text or json (one per line)."),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error for a user mistake and return the Exit to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _flags(**kw: Any) -> po.PoolFlags:
    if kw["isolation"] not in ("coroutine", "thread", "process"):
        raise fail(f"--isolation must be coroutine, thread or process, not {kw['isolation']!r}")
    if kw.get("unknown_tenant", "refuse") not in ("refuse", "defaults"):
        raise fail(f"--unknown-tenant must be refuse or defaults, not {kw['unknown_tenant']!r}")
    return po.PoolFlags(**kw)


def _secret(value: str | None, file: Path | None) -> str | None:
    if file is not None:
        try:
            return file.read_text().strip()
        except OSError as e:
            raise fail(f"cannot read --api-secret-file {file}: {e.strerror}") from None
    return value


@app.command()
def start(
    agents_dir: AgentsDir,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="LIVEKIT_URL", help="LiveKit server URL (ws:// or wss://)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="LIVEKIT_API_KEY", help="LiveKit API key.")
    ] = None,
    api_secret: Annotated[
        str | None,
        typer.Option(
            "--api-secret",
            envvar="LIVEKIT_API_SECRET",
            help="LiveKit API secret; prefer the env variable or --api-secret-file.",
            show_default=False,
        ),
    ] = None,
    api_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--api-secret-file",
            envvar="LIVEKIT_API_SECRET_FILE",
            help="File holding the API secret.",
        ),
    ] = None,
    isolation: po.Isolation = "coroutine",
    max_concurrent_sessions: po.MaxSessions = None,
    max_sessions_per_agent: po.MaxPerAgent = None,
    max_sessions_per_tenant: po.MaxPerTenant = None,
    deployment_version: po.Version = None,
    drain_timeout: po.DrainTimeout = DEFAULT_DRAIN_TIMEOUT,
    agent_name: po.AgentName = "",
    accept_only_registered_rooms: po.OnlyRegistered = False,
    audit_path: po.AuditPath = None,
    http_host: po.HttpHost = "127.0.0.1",
    http_port: po.HttpPort = 8081,
    manifest: po.Manifest = None,
    manifest_poll_interval: po.ManifestInterval = 5.0,
    drain_when_not_member: po.DrainWhenNotMember = False,
    metrics_jsonl: po.MetricsJsonlPath = None,
    tenant_secret_file: po.TenantSecretFile = None,
    unknown_tenant: po.UnknownTenant = "refuse",
    tenant_circuit_breaker: po.TenantBreaker = False,
    breaker_failures: po.BreakerFailures = 5,
    breaker_window: po.BreakerWindow = 60.0,
    breaker_cooldown: po.BreakerCooldown = 30.0,
    memory_warn_mb: po.MemoryWarn = None,
    memory_limit_mb: po.MemoryLimit = None,
    consecutive_failure_limit: po.FailureLimit = None,
    slow_call_threshold_ms: po.SlowCall = None,
    shared_vad: po.SharedVad = None,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
) -> None:
    """Run a production worker for the agents in AGENTS_DIR.

    SIGTERM drains: no new calls, live calls run to hang-up, then exit 0. Exit code 3
    means drain_timeout passed (or a second signal came) and live calls were cut.
    """
    setup_logging(log_level, log_format)
    secret = _secret(api_secret, api_secret_file)
    missing = [
        n
        for n, v in (
            ("LIVEKIT_URL", url),
            ("LIVEKIT_API_KEY", api_key),
            ("LIVEKIT_API_SECRET", secret),
        )
        if not v
    ]
    if missing:
        raise fail(
            f"set {', '.join(missing)} (or pass the matching flag); see openrtc start --help"
        )
    flags = _flags(
        isolation=isolation,
        max_concurrent_sessions=max_concurrent_sessions,
        max_sessions_per_agent=max_sessions_per_agent,
        max_sessions_per_tenant=max_sessions_per_tenant,
        deployment_version=deployment_version,
        drain_timeout=drain_timeout,
        agent_name=agent_name,
        accept_only_registered_rooms=accept_only_registered_rooms,
        audit_path=audit_path,
        http_host=http_host,
        http_port=http_port,
        manifest=manifest,
        manifest_poll_interval=manifest_poll_interval,
        drain_when_not_member=drain_when_not_member,
        metrics_jsonl=metrics_jsonl,
        tenant_secret_file=tenant_secret_file,
        unknown_tenant=unknown_tenant,
        tenant_circuit_breaker=tenant_circuit_breaker,
        breaker_failures=breaker_failures,
        breaker_window=breaker_window,
        breaker_cooldown=breaker_cooldown,
        memory_warn_mb=memory_warn_mb,
        memory_limit_mb=memory_limit_mb,
        consecutive_failure_limit=consecutive_failure_limit,
        slow_call_threshold_ms=slow_call_threshold_ms,
        shared_vad=shared_vad,
    )
    code = _run_worker(flags, agents_dir, url=url, api_key=api_key, api_secret=secret)
    raise typer.Exit(code)


def _run_worker(
    flags: po.PoolFlags,
    agents_dir: Path,
    *,
    url: str | None,
    api_key: str | None,
    api_secret: str | None,
) -> int:
    from ..worker.lifespan import serve

    try:
        pool = flags.build(agents_dir)
        server = pool.build_server(ws_url=url, api_key=api_key, api_secret=api_secret)
    except OpenRTCError as e:
        raise fail(str(e)) from None
    logging.getLogger("openrtc").info(
        "worker %s serving %s (%s isolation)",
        pool.deployment_version,
        ", ".join(pool.list_agents()),
        pool.isolation,
    )
    return asyncio.run(serve(pool, server))


@app.command("list")
def list_agents(
    agents_dir: AgentsDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the agents AGENTS_DIR registers, with their names, classes and files."""
    from ..pool import AgentPool

    pool = AgentPool()
    try:
        specs = pool.discover(agents_dir)
    except OpenRTCError as e:
        raise fail(str(e)) from None
    rows = [
        {
            "name": s.name,
            "class": s.agent_cls.__name__,
            "file": str(s.source) if s.source else "",
            "stt": type(s.stt).__name__ if s.stt is not None else "default",
            "llm": type(s.llm).__name__ if s.llm is not None else "default",
            "tts": type(s.tts).__name__ if s.tts is not None else "default",
            "greeting": s.greeting or "",
        }
        for s in specs
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "class", "providers (stt/llm/tts)", "file")
    for r in rows:
        table.add_row(r["name"], r["class"], f"{r['stt']}/{r['llm']}/{r['tts']}", r["file"])
    Console().print(table)


from .deploy_tools import audit_app, manifest_app  # noqa: E402
from .dev import dev_command, devserver_command  # noqa: E402
from .fleet import fleet_command  # noqa: E402
from .rehearse import rehearse_command  # noqa: E402
from .tools import connect_command, console_command, download_files_command  # noqa: E402
from .top import top_command  # noqa: E402

app.add_typer(manifest_app, name="manifest")
app.add_typer(audit_app, name="audit")
app.command("rehearse")(rehearse_command)
app.command("dev")(dev_command)
app.command("top")(top_command)
app.command("fleet")(fleet_command)
app.command("console")(console_command)
app.command("connect")(connect_command)
app.command("download-files")(download_files_command)
app.command("devserver")(devserver_command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
