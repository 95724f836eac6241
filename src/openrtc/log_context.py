"""Who a log line is about: the worker's version and, inside a call, its job, agent and tenant.

The fields live in a context variable, so every task a call starts (its AgentSession, its
providers, the agent's own code) inherits them, and two workers on one loop never mix
theirs. `LogContextFilter` copies them onto each record that passes a handler; fields a
record already carries (an explicit `extra=`) are left alone.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping, MutableMapping
from types import MappingProxyType
from typing import Any

_FIELDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "openrtc_log_fields", default=MappingProxyType({})
)
ORDER = ("deployment_version", "job_id", "agent", "tenant")
"""The fields this module sets, in the order a text line shows them."""


def bind(**fields: str) -> contextvars.Token[Mapping[str, str]]:
    """Add fields for the current task and the tasks it starts from now on."""
    return _FIELDS.set(MappingProxyType({**_FIELDS.get(), **fields}))


def unbind(token: contextvars.Token[Mapping[str, str]]) -> None:
    _FIELDS.reset(token)


class FieldsAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds fixed fields (e.g. a pool's version) under any explicit `extra`.

    For objects whose lines may be logged from any task or thread (a pool's lifecycle,
    its refusals), where the context variable of the worker's task is not in effect.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class LogContextFilter(logging.Filter):
    """Puts the bound fields on every record (attach it to a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _FIELDS.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def suffix(record: logging.LogRecord) -> str:
    """' [v1.2.0 job=AJ_x agent=sales tenant=acme]' for a text line, '' when none is set."""
    parts = []
    for key in ORDER:
        value = getattr(record, key, None)
        if value:
            parts.append(str(value) if key == "deployment_version" else f"{key}={value}")
    return f" [{' '.join(parts)}]" if parts else ""
