"""Agent files written to disk for the reload tests, and what their replies look like."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livekit.agents import llm

AGENT = """from livekit.agents import Agent


class {cls}(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="{instructions}")
"""

BROKEN = """from livekit.agents import Agent


class {cls}(Agent)
    def __init__(self) -> None:
        super().__init__(instructions="{instructions}")
"""
"""The class line (line 4) lacks its colon."""


def write_agent(path: Path, cls: str, instructions: str, template: str = AGENT) -> Path:
    path.write_text(template.format(cls=cls, instructions=instructions))
    return path


def answered(session: Any) -> int:
    """How many replies the agent of this live session has finished."""
    return sum(
        1
        for item in session.history.items
        if isinstance(item, llm.ChatMessage) and item.role == "assistant"
    )


def reply(instructions: str, said: str) -> str:
    return f"{instructions} | you said: {said}"
