"""The worker's one lifecycle state machine.

starting -> accepting -> draining -> drained -> stopped, plus not_member (a worker whose
version is not in the active manifest): it takes no new calls but keeps its live ones,
and returns to accepting when a manifest names its version again. Every transition is
checked against the table below and reported to the listeners (log, audit, metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

logger = logging.getLogger("openrtc.lifecycle")


class WorkerState(StrEnum):
    STARTING = "starting"
    ACCEPTING = "accepting"
    NOT_MEMBER = "not_member"
    DRAINING = "draining"
    DRAINED = "drained"
    STOPPED = "stopped"

    @property
    def takes_calls(self) -> bool:
        return self is WorkerState.ACCEPTING

    @property
    def is_draining(self) -> bool:
        return self in (WorkerState.DRAINING, WorkerState.DRAINED)


_ALLOWED: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.STARTING: frozenset(
        {WorkerState.ACCEPTING, WorkerState.NOT_MEMBER, WorkerState.DRAINING, WorkerState.STOPPED}
    ),
    WorkerState.ACCEPTING: frozenset(
        {WorkerState.NOT_MEMBER, WorkerState.DRAINING, WorkerState.STOPPED}
    ),
    WorkerState.NOT_MEMBER: frozenset(
        {WorkerState.ACCEPTING, WorkerState.DRAINING, WorkerState.STOPPED}
    ),
    WorkerState.DRAINING: frozenset({WorkerState.DRAINED, WorkerState.STOPPED}),
    WorkerState.DRAINED: frozenset({WorkerState.STOPPED}),
    WorkerState.STOPPED: frozenset(),
}


@dataclass(frozen=True)
class Transition:
    previous: WorkerState
    state: WorkerState
    reason: str
    actor: str
    at: float


Listener = Callable[[Transition], None]


class IllegalTransition(RuntimeError):
    pass


Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Lifecycle:
    """Holds the current state; `move()` is the only way to change it."""

    def __init__(self, log: Log = logger) -> None:
        self._log = log
        self._state = WorkerState.STARTING
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.history: list[Transition] = []

    @property
    def state(self) -> WorkerState:
        return self._state

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def busy(self) -> bool:
        """True while some thread is inside `move` (a signal may have interrupted it)."""
        return self._lock.locked()

    def can_move(self, to: WorkerState) -> bool:
        return to in _ALLOWED[self._state]

    def move(self, to: WorkerState, *, reason: str, actor: str = "system") -> Transition | None:
        """Change state; a move to the current state is a no-op that returns None."""
        with self._lock:
            prev = self._state
            if to is prev:
                return None
            if to not in _ALLOWED[prev]:
                raise IllegalTransition(f"worker cannot go from {prev} to {to}")
            self._state = to
            tr = Transition(prev, to, reason, actor, time.time())
            self.history.append(tr)
        self._log.info("worker state %s -> %s (%s, by %s)", prev, to, reason, actor)
        for listener in list(self._listeners):
            try:
                listener(tr)
            except Exception:
                self._log.exception("lifecycle listener failed on %s -> %s", prev, to)
        return tr
