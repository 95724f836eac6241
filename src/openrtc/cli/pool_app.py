"""`pool.run()`: a pool built in Python runs as its own program, like the `openrtc` CLI.

`python app.py start|dev|console|connect|download-files` take the same flags and
variables as the `openrtc` commands of those names, with the pool the program built
in place of TARGET.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ..pool import AgentPool
from . import pool_options as po
from .dev import dev_command
from .main import start
from .tools import connect_command, console_command, download_files_command


def pool_program(name: str) -> typer.Typer:
    program = typer.Typer(
        name=name,
        help="Run this program's agent pool (the `openrtc` commands, for one pool).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    program.command("start")(start)
    program.command("dev")(dev_command)
    program.command("console")(console_command)
    program.command("connect")(connect_command)
    program.command("download-files")(download_files_command)
    return program


def run_pool(pool: AgentPool, argv: list[str] | None = None) -> None:
    """Parse `argv` (default: the process's arguments) and run the command on `pool`."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    po.set_program_pool(pool)
    args = sys.argv[1:] if argv is None else list(argv)
    program = pool_program(Path(sys.argv[0]).name or "app")
    try:
        program(args=args, prog_name=Path(sys.argv[0]).name or "app")
    except KeyboardInterrupt:
        sys.exit(130)
