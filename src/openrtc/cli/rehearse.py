"""`openrtc rehearse`: run a whole blue-green deploy on this machine and check it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_AGENTS = Path("examples/agents")


def rehearse_command(
    agents_dir: Annotated[
        Path | None,
        typer.Argument(help="Agents to deploy (default: ./examples/agents).", show_default=False),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=8, help="Workers per version.")
    ] = 2,
    calls: Annotated[int, typer.Option("--calls", min=1, help="Simulated calls to place.")] = 40,
    from_version: Annotated[
        str, typer.Option("--from", help="The version running now.")
    ] = "v1.0.0",
    to_version: Annotated[str, typer.Option("--to", help="The version being deployed.")] = "v2.0.0",
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Rehearse the reverse: drain --to, back to --from.")
    ] = False,
    rate: Annotated[float, typer.Option("--rate", min=0.1, help="Calls placed per second.")] = 4.0,
    no_manifest: Annotated[
        bool,
        typer.Option("--no-manifest", help="Skip the signed manifest; cut over by SIGTERM alone."),
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Keep logs, audit files and the manifest here."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the report as one self-contained HTML page with a timeline.",
        ),
    ] = None,
) -> None:
    """Rehearse a zero-downtime deploy: real workers, real SIGTERM, simulated calls.

    Exits 0 only when no call was dropped, unserved or failed, no call was accepted on
    the old version after the cutover, and every audit chain is whole.
    """
    from ..deploy.rehearsal import Rehearsal, RehearsalConfig
    from .logs import setup_logging

    setup_logging("WARNING")
    directory = agents_dir or DEFAULT_AGENTS
    if not directory.is_dir():
        typer.secho(
            f"error: {directory} is not a directory of agents; pass AGENTS_DIR", err=True, fg="red"
        )
        raise typer.Exit(2)
    if html is not None and not html.resolve().parent.is_dir():
        typer.secho(f"error: --html {html}: no directory {html.parent}", err=True, fg="red")
        raise typer.Exit(2)
    config = RehearsalConfig(
        agents_dir=directory.resolve(),
        workers=workers,
        calls=calls,
        from_version=from_version,
        to_version=to_version,
        rollback=rollback,
        call_rate=rate,
        use_manifest=not no_manifest,
        workdir=workdir.resolve() if workdir else None,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        report = asyncio.run(Rehearsal(config, on_event=progress).run())
    except (RuntimeError, TimeoutError, OSError) as e:
        typer.secho(f"error: rehearsal stopped: {e}", err=True, fg="red")
        raise typer.Exit(1) from None
    if html is not None:
        from ..deploy.rehearsal.html import render_html

        try:
            html.write_text(render_html(report))
        except OSError as e:
            typer.secho(f"error: --html {html}: {e.strerror}", err=True, fg="red")
            raise typer.Exit(2) from None
        print(f"report written to {html}", file=sys.stderr)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(report.render().split("\n\n", 1)[-1] if report.timeline else report.render())
    raise typer.Exit(0 if report.ok else 1)
