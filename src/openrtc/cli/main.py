"""The `openrtc` command line."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..config import PoolConfig
from ..errors import OpenRTCError
from ..worker import event_loop
from . import pool_options as po
from .logs import setup_logging
from .options import (
    AgentsDir,
    ApiKey,
    ApiSecret,
    FormatName,
    LevelName,
    LogFormat,
    LogLevel,
    Target,
    Url,
)

app = typer.Typer(
    name="openrtc",
    help="Run many LiveKit voice agents in one worker, and deploy them without dropping calls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error for a user mistake and return the Exit to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _secret(value: str | None, file: Path | None) -> str | None:
    if file is not None:
        try:
            return file.read_text().strip()
        except OSError as e:
            raise fail(f"cannot read --api-secret-file {file}: {e.strerror}") from None
    return value


@app.command()
@po.pool_flags
def start(
    target: Target = None,
    url: Url = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
    api_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--api-secret-file",
            envvar="LIVEKIT_API_SECRET_FILE",
            help="File holding the API secret.",
        ),
    ] = None,
    log_level: LogLevel = LevelName.INFO,
    log_format: LogFormat = FormatName.auto,
    config: PoolConfig = po.DEFAULTS,
    overrides: po.Overrides | None = None,
) -> None:
    """Run a production worker for TARGET's agents (a directory, or FILE.py:NAME).

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
    if config.runtime.process_count > 1:
        if target is None or not Path(target).is_dir():
            raise fail("--processes needs TARGET to be a directory of agent files")
        log_setup = functools.partial(setup_logging, log_level, log_format)
        code = _run_processes(config, Path(target), url, api_key, secret, log_setup)
    else:
        code = _run_worker(
            config, target, overrides or {}, url=url, api_key=api_key, api_secret=secret
        )
    raise typer.Exit(code)


def _run_worker(
    config: PoolConfig,
    target: str | None,
    overrides: po.Overrides,
    *,
    url: str | None,
    api_key: str | None,
    api_secret: str | None,
) -> int:
    from ..worker.lifespan import preflight, serve
    from ..worker.server import PoolServer

    try:
        po.check_paths(config)
        pool = po.pool_for(target, config, overrides)
        preflight(pool)
        server = PoolServer(pool, ws_url=url, api_key=api_key, api_secret=api_secret)
    except OpenRTCError as e:
        raise fail(str(e)) from None
    logging.getLogger("openrtc").info(
        "worker %s serving %s (%s isolation)",
        pool.deployment_version,
        ", ".join(pool.list_agents()),
        pool.isolation,
    )
    try:
        return event_loop.run(serve(pool, server), config.runtime)
    except OpenRTCError as e:
        # a start-up check that could only run once the worker was starting
        raise fail(str(e)) from None


def _run_processes(
    config: PoolConfig,
    agents_dir: Path,
    url: str | None,
    api_key: str | None,
    api_secret: str | None,
    log_setup: Callable[[], None],
) -> int:
    """`--processes N`: a supervisor and N worker processes (`worker.supervisor`)."""
    from ..audit import AuditFileError, AuditLog
    from ..ops.http import load_admin_token
    from ..worker.supervisor import ChildSpec, Supervisor, child_config

    try:
        po.build_pool(config.replace("audit", path=None), agents_dir)  # fail here, once
        audit = AuditLog(
            f"supervisor-{os.getpid()}", config.deployment.version, path=config.audit.path
        )
    except (OpenRTCError, AuditFileError, OSError) as e:
        raise fail(str(e)) from None

    def spec(index: int) -> ChildSpec:
        return ChildSpec(
            index, child_config(config, index), agents_dir, url, api_key, api_secret, log_setup
        )

    supervisor = Supervisor(config, spec, audit=audit, admin_token=load_admin_token())
    logging.getLogger("openrtc").info(
        "worker %s: %d processes", config.deployment.version, supervisor.count
    )
    try:
        return event_loop.run(supervisor.run(), config.runtime)
    finally:
        audit.close()


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


from .deploy_tools import audit_app, manifest_app, tenant_app  # noqa: E402
from .dev import dev_command, devserver_command  # noqa: E402
from .fleet import fleet_command  # noqa: E402
from .rehearse import rehearse_command  # noqa: E402
from .tools import connect_command, console_command, download_files_command  # noqa: E402
from .top import top_command  # noqa: E402

app.add_typer(manifest_app, name="manifest")
app.add_typer(audit_app, name="audit")
app.add_typer(tenant_app, name="tenant")
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
