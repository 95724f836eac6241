"""Run pools against the loopback dispatch server, the way the tests need them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from openrtc import AgentPool
from openrtc.devserver import DispatchServer
from openrtc.worker.lifespan import Lifespan, until_started
from openrtc.worker.server import PoolServer


@dataclass
class RunningPool:
    pool: AgentPool
    server: PoolServer
    lifespan: Lifespan
    task: asyncio.Task[int]

    async def exit_code(self, timeout: float = 30.0) -> int:
        return await asyncio.wait_for(asyncio.shield(self.task), timeout)


@contextlib.asynccontextmanager
async def running(
    pool: AgentPool, devserver: DispatchServer, *, http_port: int | None = None
) -> AsyncIterator[RunningPool]:
    """Run the pool's worker against the dispatch server until the block exits."""
    server = PoolServer(
        pool, ws_url=devserver.ws_url, api_key=devserver.api_key, api_secret=devserver.api_secret
    )
    lifespan = Lifespan(pool, server, ops=dataclasses.replace(pool.config.ops, port=http_port))
    task = asyncio.create_task(lifespan.run())
    try:
        if not await asyncio.wait_for(until_started(lifespan, task), 15):
            raise RuntimeError(f"the worker stopped while starting: {task.result()}")
        yield RunningPool(pool, server, lifespan, task)
    finally:
        if not task.done():
            lifespan.force()
            pool.begin_drain(reason="test over", actor="test")
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 30)


async def wait_until(predicate: object, timeout: float = 15.0, interval: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def agents_folder(root: Path, name: str) -> Path:
    """`root/agents` holding one fake-provider agent called `name` (for CLI subprocesses)."""
    folder = root / "agents"
    folder.mkdir()
    source = f"""
        from livekit.agents import Agent
        from openrtc import agent_config
        from openrtc.testing import FakeLLM, FakeSTT, FakeTTS

        @agent_config(name="{name}", stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS())
        class {name.title()}(Agent):
            def __init__(self):
                super().__init__(instructions="You are {name.title()}.")
        """
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder
