"""`openrtc console`, `openrtc connect` and `openrtc download-files`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import OpenRTCError
from .options import ApiKey, ApiSecret, Target, Url

AgentOpt = Annotated[
    str | None,
    typer.Option("--agent", help="Which agent to talk to (default: the first registered)."),
]


def _error(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(code)


def _pool(target: str | None) -> Any:
    from ..config import PoolConfig, Runtime
    from . import pool_options as po

    try:
        if target is not None and Path(target).is_dir():
            config = PoolConfig.from_env(runtime=Runtime(prewarm_models=False))
            return po.build_pool(config, Path(target))
        return po.pool_for(target, PoolConfig(), {})
    except OpenRTCError as e:
        raise _error(str(e)) from None


def _spec(pool: Any, agent: str | None) -> Any:
    name = agent or pool.list_agents()[0]
    if name not in pool.list_agents():
        raise _error(f"no agent named {name!r}; this directory has {', '.join(pool.list_agents())}")
    return pool.get(name)


async def _chat(pool: Any, spec: Any, lines: Any, out: Any) -> int:
    from livekit import agents
    from livekit.agents import AgentSession

    session: AgentSession[Any] = AgentSession(**pool.session_options(spec))
    await session.start(spec.agent_cls(), record=False)
    turns = 0
    try:
        greeting = pool.greeting_for(spec)
        if greeting:
            handle = session.say(greeting)
            await handle.wait_for_playout()
            out(f"{spec.name}> {greeting}")
        for line in lines:
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            handle = session.generate_reply(user_input=text)
            await handle.wait_for_playout()
            if (err := handle.exception()) is not None:
                out(f"{spec.name}! {type(err).__name__}: {err}")
                continue
            said = [
                (item.text_content or "").strip()
                for item in handle.chat_items
                if isinstance(item, agents.llm.ChatMessage) and item.role == "assistant"
            ]
            out(f"{spec.name}> {' '.join(s for s in said if s)}")
            turns += 1
    finally:
        await session.aclose()
    return turns


def console_command(
    target: Target = None,
    agent: AgentOpt = None,
) -> None:
    """Talk to one agent in this terminal, in text, with no server and no room.

    Type a line, read the reply; /quit or end of input stops. The agent's own providers
    (from @agent_config or its session settings) answer.
    """
    from .logs import setup_logging

    setup_logging("WARNING")
    pool = _pool(target)
    spec = _spec(pool, agent)
    interactive = sys.stdin.isatty()
    if interactive:
        typer.echo(f"talking to {spec.name} ({spec.agent_cls.__name__}); /quit to stop")

    def lines() -> Any:
        while True:
            if interactive:
                typer.echo("you> ", nl=False)
            line = sys.stdin.readline()
            if not line:
                return
            yield line

    asyncio.run(_chat(pool, spec, lines(), typer.echo))


def download_files_command(
    agents_dir: Annotated[
        Path | None,
        typer.Argument(help="Also import these agents, so their plugins fetch what they need."),
    ] = None,
) -> None:
    """Fetch every plugin's model files now (for images built ahead of going offline).

    Also loads the shared Silero VAD and end-of-turn model once, which ship inside their
    packages, so a broken install shows here rather than on the first call.
    """
    from livekit.agents import Plugin

    from ..worker.models import shared_models
    from .logs import setup_logging

    setup_logging("WARNING")
    if agents_dir is not None:
        _pool(str(agents_dir))
    for plugin in Plugin.registered_plugins:
        typer.echo(f"{plugin.title} {plugin.version}: downloading files")
        try:
            plugin.download_files()
        except Exception as e:
            raise _error(f"{plugin.title} could not fetch its files: {e}", 1) from None
    started = time.perf_counter()
    models = shared_models()
    typer.echo(
        f"shared models ready: {type(models.vad).__name__} and "
        f"{type(models.turn_detector).__name__} in {time.perf_counter() - started:.2f}s"
    )


def connect_command(
    room: Annotated[str, typer.Option("--room", help="The room to join.")],
    target: Target = None,
    agent: AgentOpt = None,
    url: Url = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Run one agent in an existing room on LIVEKIT_URL, without waiting for a dispatch.

    The worker joins the room with a token it signs itself, runs the call, and exits
    when the call ends. It needs a LiveKit server with media (an SFU).
    """
    from .logs import setup_logging

    setup_logging("INFO")
    missing = [
        n
        for n, v in (
            ("LIVEKIT_URL", url),
            ("LIVEKIT_API_KEY", api_key),
            ("LIVEKIT_API_SECRET", api_secret),
        )
        if not v
    ]
    if missing:
        raise _error(f"set {', '.join(missing)} (or pass the matching flag)")
    pool = _pool(target)
    spec = _spec(pool, agent)
    code = asyncio.run(_connect(pool, spec.name, room, url, api_key, api_secret))
    raise typer.Exit(code)


async def _connect(
    pool: Any, agent: str, room: str, url: Any, api_key: Any, api_secret: Any
) -> int:
    from .. import _lk
    from ..config import OpsEndpoint
    from ..worker.lifespan import Lifespan, capture_signals, until_started
    from ..worker.server import PoolServer

    server = PoolServer(pool, ws_url=url, api_key=api_key, api_secret=api_secret)
    lifespan = Lifespan(pool, server, devmode=True, ops=OpsEndpoint(port=None))
    with capture_signals(asyncio.get_running_loop(), lifespan.on_signal):
        task = asyncio.create_task(lifespan.run())
        if not await until_started(lifespan, task):
            return int(task.result())
        job_id = await _lk.launch_into_room(
            server, room=room, metadata={"agent": agent}, api_key=api_key, api_secret=api_secret
        )
        typer.echo(f"joining room {room} as {agent} (job {job_id})")
        while pool.admitted or server.job_executors():
            await asyncio.sleep(0.1)
        outcome = pool.runtime_snapshot().outcomes_total
        pool.begin_drain(reason="connect: call ended", actor="cli")
        await task
    failed = outcome.get("failed", 0)
    if failed:
        typer.secho(
            f"error: the call in room {room} failed; is there a LiveKit media server at {url}?",
            err=True,
            fg="red",
        )
        return 1
    return 0
