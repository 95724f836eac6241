"""Options several commands share: the LiveKit connection and logging."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

AgentsDir = Annotated[
    Path,
    typer.Argument(help="Directory with one agent per *.py file.", show_default=False),
]
Target = Annotated[
    str | None,
    typer.Argument(
        help="The agents: a directory with one agent per *.py file, or an AgentPool "
        "object as FILE.py:NAME or module:NAME (left out under `pool.run()`).",
        show_default=False,
    ),
]
Url = Annotated[
    str | None,
    typer.Option("--url", envvar="LIVEKIT_URL", help="LiveKit server URL (ws:// or wss://)."),
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="LIVEKIT_API_KEY", help="LiveKit API key.")
]
ApiSecret = Annotated[
    str | None,
    typer.Option(
        "--api-secret",
        envvar="LIVEKIT_API_SECRET",
        help="LiveKit API secret; prefer the environment variable (flags show in ps).",
        show_default=False,
    ),
]


class LevelName(StrEnum):
    """livekit-agents' level names (its --log-level / LIVEKIT_LOG_LEVEL), and WARNING."""

    TRACE = "TRACE"
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class FormatName(StrEnum):
    auto = "auto"
    text = "text"
    json = "json"


LogLevel = Annotated[
    LevelName,
    typer.Option(
        "--log-level",
        envvar=["OPENRTC_LOG_LEVEL", "LIVEKIT_LOG_LEVEL"],
        case_sensitive=False,
        help="How much to log (also LIVEKIT_LOG_LEVEL, as in livekit-agents).",
    ),
]
LogFormat = Annotated[
    FormatName,
    typer.Option(
        "--log-format",
        envvar="OPENRTC_LOG_FORMAT",
        help="text, json (one object a line, livekit-agents' keys), or auto: json unless "
        "the log stream (stderr) is a terminal.",
    ),
]
