"""`openrtc start` never hot-reloads: a saved agent file changes nothing in a running worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from openrtc import AgentPool
from openrtc.cli import main as cli_main
from openrtc.cli.pool_options import build_pool
from openrtc.config import Dispatch, PoolConfig
from openrtc.devserver import DispatchServer
from openrtc.worker import lifespan
from tests.harness import running, wait_until

AGENT = """from livekit.agents import Agent

from openrtc import agent_config
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS


@agent_config(stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS())
class Alpha(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="{instructions}")
"""


def agents_dir(tmp_path: Path) -> Path:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "alpha.py").write_text(AGENT.format(instructions="You are Alpha v1."))
    return agents


async def reply_from(devserver: DispatchServer, pool: AgentPool) -> str:
    """The reply to one simulated call placed on the worker registered as pool.agent_name."""
    job = await devserver.dispatch(
        agent_name=pool.config.dispatch.agent_name,
        simulated_call={"turns": ["hi"], "mode": "text", "pause_s": 0.0},
    )
    done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=20)
    assert done.state.value == "success", done.to_dict()
    return str(pool.transcripts[job.id].replies[0])


async def test_a_start_worker_keeps_its_class_while_a_dev_worker_reloads_the_same_file(
    tmp_path: Path, devserver: DispatchServer
) -> None:
    agents = agents_dir(tmp_path)
    start_pool = build_pool(PoolConfig.from_env(dispatch=Dispatch(agent_name="start")), agents)
    assert start_pool.config.runtime.hot_reload is False
    dev_pool = build_pool(PoolConfig.from_env(dispatch=Dispatch(agent_name="dev")), agents)
    dev_pool.update_config("runtime", hot_reload=True)  # what `openrtc dev --watch` does
    started_class = start_pool.get("alpha").agent_cls
    dev_class = dev_pool.get("alpha").agent_cls
    async with running(start_pool, devserver) as start, running(dev_pool, devserver) as dev:
        assert start.lifespan.reloader is None
        assert dev.lifespan.reloader is not None
        assert await reply_from(devserver, start_pool) == "You are Alpha v1. | you said: hi"

        (agents / "alpha.py").write_text(AGENT.format(instructions="You are Alpha v2."))
        # the dev worker, watching the same file, proves the save was seen
        await wait_until(lambda: dev_pool.get("alpha").agent_cls is not dev_class)
        assert await reply_from(devserver, dev_pool) == "You are Alpha v2. | you said: hi"
        assert await reply_from(devserver, start_pool) == "You are Alpha v1. | you said: hi"
        assert start_pool.get("alpha").agent_cls is started_class


def test_the_start_command_builds_its_pool_with_hot_reload_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[AgentPool] = []

    async def serve_nothing(pool: AgentPool, server: Any, **_: Any) -> int:
        served.append(pool)
        return 0

    monkeypatch.setattr(lifespan, "serve", serve_nothing)
    monkeypatch.setattr(cli_main, "setup_logging", lambda *_: None)
    env = {
        "LIVEKIT_URL": "ws://127.0.0.1:9",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "x" * 32,
    }
    agents = agents_dir(tmp_path)
    result = CliRunner().invoke(cli_main.app, ["start", str(agents)], env=env)
    assert result.exit_code == 0, result.output
    (pool,) = served
    assert pool.list_agents() == ["alpha"]
    assert (pool.config.runtime.hot_reload, pool.config.runtime.watch_paths) == (False, ())

    refused = CliRunner().invoke(cli_main.app, ["start", str(agents), "--watch"], env=env)
    assert refused.exit_code == 2
    assert len(served) == 1
