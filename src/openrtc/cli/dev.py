"""`openrtc dev` and `openrtc devserver`: everything on one laptop, no LiveKit server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import PoolConfig
from ..errors import OpenRTCError
from ..worker import event_loop
from . import pool_options as po
from .logs import setup_logging
from .options import ApiKey, ApiSecret, FormatName, LevelName, LogFormat, LogLevel, Target


def _say(line: str) -> None:
    print(line, flush=True)


async def _place_demo_calls(devserver: Any, pool: Any, turns: list[str]) -> bool:
    """One simulated call to each agent; prints each reply. True when all succeeded."""
    ok = True
    for name in pool.list_agents():
        job = await devserver.dispatch(
            metadata={"agent": name},
            simulated_call={"turns": turns, "mode": "text", "pause_s": 0.1},
        )
        done = await devserver.wait_job(
            job.id, {"success", "failed", "cancelled", "unserved", "dropped"}, timeout=60
        )
        _say(f"call {job.id} to {name}: {done.state.value}")
        transcript = pool.transcripts.get(job.id)
        if transcript is not None:
            if transcript.greeting:
                _say(f"  {name}: {transcript.greeting}")
            for said, reply in zip(transcript.turns, transcript.replies, strict=False):
                _say(f"  caller: {said}")
                _say(f"  {name}: {reply}")
        ok = ok and done.state.value == "success"
    return ok


async def _run_dev(
    config: PoolConfig,
    target: str | None,
    *,
    overrides: po.Overrides | None = None,
    url: str | None,
    api_key: str | None,
    api_secret: str | None,
    demo: bool,
    exit_after_demo: bool,
    watch: bool = True,
    watch_paths: list[Path] | None = None,
) -> int:
    from ..devserver import DispatchServer
    from ..worker.lifespan import Lifespan, capture_signals, until_started
    from ..worker.server import PoolServer

    async with contextlib.AsyncExitStack() as stack:
        devserver = None
        if not url:
            devserver = await stack.enter_async_context(DispatchServer())
            url, api_key, api_secret = devserver.ws_url, devserver.api_key, devserver.api_secret
            _say(f"embedded dispatch server on {url} (LIVEKIT_URL unset)")
            _say(f"control API: {devserver.http_url}/openrtc/  (API key {api_key})")
        try:
            given = {group: dict(fields) for group, fields in (overrides or {}).items()}
            given.setdefault("runtime", {})["hot_reload"] = watch
            if watch_paths:
                given["runtime"]["watch_paths"] = (*config.runtime.watch_paths, *watch_paths)
            pool = po.pool_for(target, config, given)
            server = PoolServer(pool, ws_url=url, api_key=api_key, api_secret=api_secret)
        except OpenRTCError as e:
            typer.secho(f"error: {e}", err=True, fg="red")
            return 2
        lifespan = Lifespan(pool, server, devmode=True)
        with capture_signals(asyncio.get_running_loop(), lifespan.on_signal):
            task = asyncio.create_task(lifespan.run())
            if not await until_started(lifespan, task):
                return task.result()
            _say(f"worker {pool.worker_id} serving: {', '.join(pool.list_agents())}")
            if demo and devserver is not None:
                ok = await _place_demo_calls(devserver, pool, ["hello", "what can you do?"])
                if exit_after_demo:
                    pool.begin_drain(reason="demo calls done", actor="dev")
                    code = await task
                    return code if ok else 1
            elif demo:
                _say("--demo needs the embedded dispatch server; unset LIVEKIT_URL")
            _say("press Ctrl-C to drain and stop")
            return await task
    return 0


@po.pool_flags
def dev_command(
    target: Target = None,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="LIVEKIT_URL", help="LiveKit server; unset: embedded one."),
    ] = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Place one simulated call to each agent and print it.")
    ] = False,
    exit_after_demo: Annotated[
        bool, typer.Option("--exit-after-demo", help="With --demo: drain and exit afterwards.")
    ] = False,
    log_level: LogLevel = LevelName.INFO,
    log_format: LogFormat = FormatName.text,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch/--no-watch",
            help="Hot reload: a saved agent file takes over live calls on their next turn.",
        ),
    ] = True,
    watch_path: Annotated[
        list[Path] | None,
        typer.Option(
            "--watch-path",
            help="Also watch this file or directory (repeatable); a change reloads every agent.",
        ),
    ] = None,
    config: PoolConfig = po.DEFAULTS,
    overrides: po.Overrides | None = None,
) -> None:
    """Run the agents locally: against LIVEKIT_URL, or an embedded dispatch server."""
    if config.runtime.processes != 1:
        typer.secho("error: --processes is for openrtc start; dev runs one process", err=True)
        raise typer.Exit(2)
    setup_logging(log_level, log_format)
    code = event_loop.run(
        _run_dev(
            config,
            target,
            overrides=overrides,
            url=url,
            api_key=api_key,
            api_secret=api_secret,
            demo=demo or exit_after_demo,
            exit_after_demo=exit_after_demo,
            watch=watch,
            watch_paths=list(watch_path or []),
        ),
        config.runtime,
    )
    raise typer.Exit(code)


def devserver_command(
    port: Annotated[
        int,
        typer.Option(
            "--port", envvar="OPENRTC_DEVSERVER_PORT", help="Port for /agent and the control API."
        ),
    ] = 7880,
    host: Annotated[str, typer.Option("--host", help="Bind address (loopback by default).")] = (
        "127.0.0.1"
    ),
    api_key: Annotated[
        str,
        typer.Option("--api-key", envvar="LIVEKIT_API_KEY", help="API key workers must sign with."),
    ] = "devkey",
    api_secret: Annotated[
        str | None,
        typer.Option(
            "--api-secret",
            envvar="LIVEKIT_API_SECRET",
            help="Default: a fresh random secret, printed once for your shell.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the loopback dispatch server alone and print the variables workers need."""
    setup_logging("INFO")

    async def run() -> None:
        from ..devserver import DispatchServer

        async with DispatchServer(
            host=host, port=port, api_key=api_key, api_secret=api_secret
        ) as server:
            _say(f"export LIVEKIT_URL={server.ws_url}")
            _say(f"export LIVEKIT_API_KEY={server.api_key}")
            if api_secret is None:
                _say(f"export LIVEKIT_API_SECRET={server.api_secret}")
            _say(f"# control API: {server.http_url}/openrtc/ (Ctrl-C to stop)")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in ("SIGINT", "SIGTERM"):
                import signal

                loop.add_signal_handler(getattr(signal, sig), stop.set)
            await stop.wait()

    try:
        asyncio.run(run())
    except OSError as e:
        typer.secho(f"error: cannot listen on {host}:{port}: {e.strerror}", err=True, fg="red")
        raise typer.Exit(2) from None
