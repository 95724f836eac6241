"""What the pool knows about each call, and the observer hooks around it."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger("openrtc.sessions")


class Outcome(StrEnum):
    """How a call ended: SUCCESS (hung up), FAILED (its code raised), CANCELLED (cut)."""

    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SessionInfo:
    job_id: str
    agent: str
    room: str
    tenant: str
    deployment_version: str
    worker_id: str
    metadata: Mapping[str, Any]
    started_at: float
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "agent": self.agent,
            "room": self.room,
            "tenant": self.tenant,
            "deployment_version": self.deployment_version,
            "worker_id": self.worker_id,
            "started_at": self.started_at,
            "simulated": self.simulated,
        }


@dataclass(frozen=True)
class SessionOutcome:
    status: Outcome
    ended_at: float
    duration_s: float
    error: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "ended_at": self.ended_at,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "reason": self.reason,
        }


@runtime_checkable
class SessionObserver(Protocol):
    """Anything with these two coroutines; a slow or raising observer is logged and skipped."""

    async def on_session_start(self, info: SessionInfo, session: Any) -> None: ...

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None: ...


@dataclass
class LiveSession:
    """A running call as the pool tracks it."""

    info: SessionInfo
    session: Any = None
    status: str = "starting"
    turns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {
            **self.info.to_dict(),
            "status": self.status,
            "duration_s": round(now - self.info.started_at, 3),
        }


async def notify(
    observers: list[SessionObserver], method: str, *args: Any, timeout: float = 5.0
) -> None:
    """Call one hook on every observer; never lets one break the call."""
    for obs in observers:
        fn = getattr(obs, method, None)
        if fn is None:
            continue
        try:
            await asyncio.wait_for(fn(*args), timeout)
        except TimeoutError:
            logger.warning("session observer %r.%s took over %.1fs; skipped", obs, method, timeout)
        except Exception:
            logger.exception("session observer %r.%s raised; skipped", obs, method)


# --- the call whose code is running -------------------------------------------------------
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class CallTag:
    """Which call the running code belongs to; inherited by every task the call spawns."""

    job_id: str
    agent: str
    tenant: str


_current_call: contextvars.ContextVar[CallTag | None] = contextvars.ContextVar(
    "openrtc_current_call", default=None
)


def enter_call(info: SessionInfo) -> None:
    """Bind the call to the current task's context (the call's entrypoint task)."""
    _current_call.set(CallTag(info.job_id, info.agent, info.tenant))


def current_call() -> CallTag | None:
    """The call whose code is running, or None outside a call."""
    return _current_call.get()


def call_in(context: contextvars.Context) -> CallTag | None:
    """The call a context (a task's) belongs to, or None."""
    return context.get(_current_call)


def current_tenant_id() -> str:
    """The tenant of the call whose code is running ("default" outside a call)."""
    tag = _current_call.get()
    return tag.tenant if tag is not None else DEFAULT_TENANT
