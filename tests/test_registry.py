"""Registration errors are one clear sentence; discovery finds one agent per file."""

from __future__ import annotations

from pathlib import Path

import pytest
from livekit.agents import Agent

from openrtc import AgentPool, RegistrationError
from openrtc.errors import AgentLoadError


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="sales")


class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="support")


def test_add_list_get_remove() -> None:
    pool = AgentPool(agents={"sales": Sales})
    pool.add("support", Support, greeting="hi")
    assert pool.list_agents() == ["sales", "support"]
    assert pool.get("support").greeting == "hi"
    pool.remove("sales")
    assert pool.list_agents() == ["support"]
    with pytest.raises(RegistrationError, match="no agent named 'sales'"):
        pool.get("sales")


@pytest.mark.parametrize("name", ["", "  ", None, "has space", "-dash-first"])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(RegistrationError, match="agent name"):
        AgentPool().add(name, Sales)  # type: ignore[arg-type]


def test_duplicate_and_non_agent_classes_are_refused() -> None:
    pool = AgentPool(agents={"sales": Sales})
    with pytest.raises(RegistrationError, match="already registered"):
        pool.add("sales", Support)
    with pytest.raises(RegistrationError, match="subclass of livekit.agents.Agent"):
        pool.add("thing", dict)  # type: ignore[arg-type]


def test_discover_names_by_decorator_or_stem(tmp_path: Path) -> None:
    (tmp_path / "alpha.py").write_text(
        "from livekit.agents import Agent\n"
        "class A(Agent):\n"
        "    def __init__(self):\n"
        "        super().__init__(instructions='a')\n"
    )
    (tmp_path / "beta.py").write_text(
        "from livekit.agents import Agent\n"
        "from openrtc import agent_config\n"
        "@agent_config(name='bravo', greeting='hello')\n"
        "class B(Agent):\n"
        "    def __init__(self):\n"
        "        super().__init__(instructions='b')\n"
    )
    (tmp_path / "_helpers.py").write_text("X = 1\n")
    pool = AgentPool()
    pool.discover(tmp_path)
    assert pool.list_agents() == ["alpha", "bravo"]
    assert pool.get("bravo").greeting == "hello"
    assert pool.get("alpha").source == (tmp_path / "alpha.py").resolve()


def test_discover_reports_file_and_line_of_a_broken_agent(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("from livekit.agents import Agent\nclass A(Agent:\n")
    with pytest.raises(AgentLoadError, match=r"broken\.py:2: syntax error"):
        AgentPool().discover(tmp_path)


def test_discover_refuses_a_file_without_agents(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(AgentLoadError, match="defines no livekit.agents.Agent subclass"):
        AgentPool().discover(tmp_path)


def test_discover_keeps_provider_strings_and_session_kwargs(tmp_path: Path) -> None:
    (tmp_path / "voice.py").write_text(
        "from livekit.agents import Agent\n"
        "from openrtc import agent_config\n"
        "@agent_config(stt='deepgram/nova-3', llm='openai/gpt-4.1-mini',\n"
        "              session_kwargs={'max_tool_steps': 6})\n"
        "class Voice(Agent):\n"
        "    def __init__(self):\n"
        "        super().__init__(instructions='v')\n"
    )
    pool = AgentPool(default_tts="cartesia/sonic-2")
    (spec,) = pool.discover(tmp_path)
    assert (spec.stt, spec.llm, spec.tts) == ("deepgram/nova-3", "openai/gpt-4.1-mini", None)
    assert pool.session_options(spec) == {
        "stt": "deepgram/nova-3",
        "llm": "openai/gpt-4.1-mini",
        "tts": "cartesia/sonic-2",
        "max_tool_steps": 6,
    }
