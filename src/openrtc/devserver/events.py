"""The ordered event log, and a wake-up signal so waiters never poll.

Every state change on the server appends an event, and every append wakes the
waiters, so "wait until job X is done" is a re-check on each append, not a sleep loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .records import DevEvent

logger = logging.getLogger("openrtc.devserver")

T = TypeVar("T")

_QUIET_KINDS = frozenset({"job_offered", "job_offer_answered", "worker_status"})


class Signal:
    """Wakes every current waiter on each `notify()`; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return at the next notify, or after `timeout` seconds, whichever comes first."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def wait_until(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """Re-run `check` on every notify until it returns a value; TimeoutError after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{what} did not happen within {timeout:g}s")
            await self.wait(remaining)


class EventLog:
    """Append-only list of DevEvents, numbered from 1, each also logged as one line."""

    def __init__(self, signal: Signal) -> None:
        self._signal = signal
        self._events: list[DevEvent] = []

    def append(self, kind: str, **fields: Any) -> DevEvent:
        event = DevEvent(seq=len(self._events) + 1, ts=time.time(), kind=kind, fields=fields)
        self._events.append(event)
        level = logging.DEBUG if kind in _QUIET_KINDS else logging.INFO
        if logger.isEnabledFor(level):
            detail = " ".join(f"{key}={value}" for key, value in fields.items())
            logger.log(level, "%s %s", kind, detail)
        self._signal.notify()
        return event

    def since(self, seq: int = 0) -> list[DevEvent]:
        """Events numbered after `seq` (0 gives all of them)."""
        return self._events[max(seq, 0) :]

    def find(self, kind: str, since: int = 0, **match: Any) -> DevEvent | None:
        """The first event after `since` of this kind whose fields equal every `match` item."""
        for event in self.since(since):
            if event.kind == kind and all(event.fields.get(k) == v for k, v in match.items()):
                return event
        return None
