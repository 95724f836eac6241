"""The reloader without a worker: loading checks, pins, watching, and moving one session."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import AgentSession, llm

from openrtc import AgentLoadError, AgentPool, SessionInfo
from openrtc.config import PoolConfig, Runtime
from openrtc.reload import HotReloader, is_reload_pinned, load_replacement, pin_reload
from openrtc.testing import FakeLLM, FakeTTS
from tests.harness import wait_until

from .agentfiles import AGENT, BROKEN, answered, reply, write_agent

GREETER = """from livekit.agents import Agent


class Greeter(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="{instructions}")

    async def on_enter(self) -> None:
        self.session.say("welcome")
"""

FROM_HELPER = """from livekit.agents import Agent

from prompts import PROMPT


class Helped(Agent):
    def __init__(self) -> None:
        super().__init__(instructions=PROMPT)
"""


def instructions_of(cls: Any) -> str:
    return str(cls().instructions)


def pool_of(
    directory: Path, *, isolation: Any = "coroutine", watch_paths: tuple[Path, ...] = ()
) -> AgentPool:
    runtime = Runtime(isolation=isolation, prewarm_models=False, watch_paths=watch_paths)
    pool = AgentPool(config=PoolConfig.from_env(runtime=runtime))
    pool.discover(directory)
    return pool


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (BROKEN.format(cls="Alpha", instructions="x"), ":4: syntax error"),
        (
            AGENT.format(cls="Alpha", instructions="x") + "\nundefined_name\n",
            ":8: importing failed",
        ),
        ("from livekit.agents import Agent\n\nVALUE = 1\n", "defines no livekit.agents.Agent"),
        (
            "from livekit.agents import Agent\n\n\nclass Alpha(Agent):\n"
            "    def __init__(self) -> None:\n        raise ValueError('bad config')\n",
            ":6: Alpha() raised ValueError: bad config",
        ),
        (
            "from livekit.agents import Agent\nfrom openrtc import agent_config\n\n\n"
            "@agent_config(name='renamed')\nclass Alpha(Agent):\n"
            "    def __init__(self) -> None:\n        super().__init__(instructions='x')\n",
            "now defines agent 'renamed' instead of 'alpha'",
        ),
    ],
    ids=["syntax", "import", "no-agent", "constructor", "renamed"],
)
def test_a_bad_save_is_refused_with_file_and_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    path = write_agent(tmp_path / "alpha.py", "Alpha", "You are Alpha v1.")
    pool = pool_of(tmp_path)
    path.write_text(source)
    with pytest.raises(AgentLoadError) as caught:
        load_replacement(path.resolve(), pool.get("alpha").agent_cls)
    assert str(caught.value).startswith(str(path.resolve()))
    assert expected in str(caught.value)


def test_an_edit_of_the_same_size_in_the_same_second_is_not_served_from_stale_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = write_agent(tmp_path / "alpha.py", "Alpha", "You are Alpha v1.")
    pool = pool_of(tmp_path)  # this import caches bytecode for v1
    stamp = path.stat().st_mtime
    write_agent(path, "Alpha", "You are Alpha v2.")
    os.utime(path, (stamp, stamp))
    cls = load_replacement(path.resolve(), pool.get("alpha").agent_cls)
    assert instructions_of(cls) == "You are Alpha v2."


async def test_reload_swaps_a_changed_file_and_skips_an_unchanged_one(tmp_path: Path) -> None:
    path = write_agent(tmp_path / "alpha.py", "Alpha", "You are Alpha v1.")
    write_agent(tmp_path / "beta.py", "Beta", "You are Beta v1.")
    pool = pool_of(tmp_path)
    beta_cls = pool.get("beta").agent_cls
    reloader = HotReloader(pool)
    write_agent(path, "Alpha", "You are Alpha v2.")
    (event,) = await reloader.reload([path])
    assert (event.ok, event.agents, event.moved) == (True, ("alpha",), 0)
    assert instructions_of(pool.get("alpha").agent_cls) == "You are Alpha v2."
    assert pool.get("beta").agent_cls is beta_cls
    assert await reloader.reload([path]) == []


async def test_a_helper_under_watch_paths_reloads_the_agents_that_import_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents, helpers = tmp_path / "agents", tmp_path / "helpers"
    agents.mkdir()
    helpers.mkdir()
    (helpers / "prompts.py").write_text('PROMPT = "You are Helped v1."\n')
    (agents / "helped.py").write_text(FROM_HELPER)
    monkeypatch.syspath_prepend(str(helpers))
    monkeypatch.delitem(sys.modules, "prompts", raising=False)
    pool = pool_of(agents, watch_paths=(helpers,))
    async with HotReloader(pool, debounce_ms=50) as reloader:
        assert reloader.watching
        (helpers / "prompts.py").write_text('PROMPT = "You are Helped v22."\n')
        await wait_until(lambda: any(e.ok for e in reloader.events), timeout=5)
    assert instructions_of(pool.get("helped").agent_cls) == "You are Helped v22."
    assert not reloader.watching


async def test_process_isolation_warns_and_does_not_watch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_agent(tmp_path / "alpha.py", "Alpha", "You are Alpha v1.")
    pool = pool_of(tmp_path, isolation="process")
    with caplog.at_level(logging.WARNING, logger="openrtc.reload"):
        async with HotReloader(pool) as reloader:
            assert not reloader.watching
    assert "hot reload is off" in caplog.text and "isolation 'process'" in caplog.text


async def test_pins_nest_and_work_as_sync_and_async_context_managers() -> None:
    session = AgentSession()
    assert not is_reload_pinned(session)
    with pin_reload(session):
        async with pin_reload(session):
            assert is_reload_pinned(session)
        assert is_reload_pinned(session)
    assert not is_reload_pinned(session)
    pin = pin_reload(session).__enter__()
    pin.release()
    pin.release()  # a second release of the same hold is a no-op
    assert not is_reload_pinned(session)


def said(session: Any, text: str) -> int:
    return sum(
        1
        for item in session.history.items
        if isinstance(item, llm.ChatMessage)
        and item.role == "assistant"
        and item.text_content == text
    )


async def test_a_moved_call_keeps_its_history_is_not_greeted_again_and_finishes_its_reply(
    tmp_path: Path,
) -> None:
    path = tmp_path / "greeter.py"
    path.write_text(GREETER.format(instructions="You are Greeter v1."))
    pool = pool_of(tmp_path)
    session: AgentSession[Any] = AgentSession(llm=FakeLLM(latency=0.5), tts=FakeTTS())
    await session.start(pool.get("greeter").agent_cls(), record=False)  # type: ignore[call-arg]
    info = SessionInfo("job-1", "greeter", "room", "", "v", "w", {}, time.time())
    pool.session_started(info, session)
    try:
        await wait_until(lambda: said(session, "welcome") == 1)
        in_flight = session.generate_reply(user_input="one")
        await asyncio.sleep(0.1)
        path.write_text(GREETER.format(instructions="You are Greeter v2."))
        reloader = HotReloader(pool)
        (event,) = await reloader.reload([path])
        assert in_flight.done() and event.moved == 1
        second = session.generate_reply(user_input="two")
        await second.wait_for_playout()
    finally:
        await session.aclose()
    assert answered(session) == 3
    texts = [m.text_content for m in session.history.items if isinstance(m, llm.ChatMessage)]
    assert reply("You are Greeter v1.", "one") in texts
    assert reply("You are Greeter v2.", "two") in texts
    assert said(session, "welcome") == 1
    assert type(session.current_agent) is pool.get("greeter").agent_cls
    history = [
        m.text_content
        for m in session.current_agent.chat_ctx.items
        if isinstance(m, llm.ChatMessage)
    ]
    assert "one" in history and "welcome" in history
