"""Real operations endpoints for pools in the test's loop, and a CLI runner for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import typer
from typer.testing import CliRunner, Result

from openrtc.deploy.rehearsal.workers import free_port
from openrtc.ops.http import OpsServer
from openrtc.ops.loop_lag import LoopLagMonitor
from openrtc.pool import AgentPool


@contextlib.asynccontextmanager
async def serving(*pools: AgentPool) -> AsyncIterator[list[OpsServer]]:
    """One started OpsServer per pool, on free loopback ports."""
    lag = LoopLagMonitor()
    lag.start()
    servers = [OpsServer(pool, lag) for pool in pools]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.aclose()
        await lag.aclose()


def free_port_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


async def invoke(command: Callable[..., Any], *args: str, columns: int = 160) -> Result:
    """Run one CLI command in a thread (the servers it reads live on this loop)."""
    app = typer.Typer()
    app.command()(command)
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), env={"COLUMNS": str(columns)})
