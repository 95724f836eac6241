"""Log setup for the CLI: readable lines in a terminal, JSON lines for log shippers.

JSON lines carry livekit-agents' own keys (`message`, `level`, `name`, `pid`, the
`code.*` fields and an ISO 8601 UTC `timestamp`), so a fleet that mixes OpenRTC workers
and plain livekit workers has one schema, plus ours: `deployment_version`, `job_id`,
`agent`, `tenant` (from `log_context`) and any `extra=` a line carries.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from ..log_context import LogContextFilter, suffix

TRACE = 5
"""livekit-agents' level below DEBUG (`LIVEKIT_LOG_LEVEL=trace`)."""

JSON_FIELDS = {
    "message": "message",
    "levelname": "level",
    "name": "name",
    "process": "pid",
    "pathname": "code.file.path",
    "funcName": "code.function.name",
    "lineno": "code.line.number",
}
"""LogRecord attribute -> key in a JSON line, as livekit-agents names them."""


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        list(JSON_FIELDS),
        rename_fields={k: v for k, v in JSON_FIELDS.items() if k != v},
        timestamp=True,
    )


class TextFormatter(logging.Formatter):
    """time level logger: message [version job=... agent=... tenant=...]"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        self.converter = time.localtime

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = suffix(record)
        if not fields:
            return text
        first, sep, rest = text.partition("\n")
        return first + fields + sep + rest


def level_number(level: str) -> int:
    """A level name as livekit's --log-level takes it (trace, debug, info, warn, ...)."""
    name = level.upper()
    if name == "TRACE":
        return TRACE
    numeric = logging.getLevelName(name)
    return numeric if isinstance(numeric, int) else logging.INFO


def resolve_format(fmt: str, stream: TextIO) -> str:
    """`auto` is json unless the log stream is a terminal, where a person reads it."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if callable(isatty) and isatty() else "json"


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    numeric = level_number(level)
    stream = sys.stderr
    handler = logging.StreamHandler(stream)
    if resolve_format(fmt, stream) == "json":
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(LogContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # as livekit's own CLI: its agents logger follows the level, the chatty ones stay quieter
    logging.getLogger("livekit.agents").setLevel(numeric)
    for noisy in ("livekit", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.INFO))
