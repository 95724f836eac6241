"""Delivering calls to session observers: one start and one end per call, none lost.

`on_session_start` runs in the background on the call's own loop, so a slow observer
never delays the call. `on_session_end` runs on the worker's loop once the call has
ended, after that call's start delivery finished (or gave up). The worker waits for the
end deliveries still pending before it exits (`flush`), for a bounded time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable

from .sessions import SessionInfo, SessionObserver, SessionOutcome, notify

logger = logging.getLogger("openrtc.observers")

OBSERVER_TIMEOUT = 5.0
"""Seconds one observer's hook may take before it is skipped for that call."""


class Deliveries:
    """Pending observer calls of one pool; observers are read when a call is delivered."""

    def __init__(self, observers: Callable[[], list[SessionObserver]]) -> None:
        self._observers = observers
        self._lock = threading.Lock()
        self._starts: dict[str, concurrent.futures.Future[None]] = {}
        self._start_tasks: set[asyncio.Task[None]] = set()
        self._ends: dict[asyncio.Task[None], SessionInfo] = {}

    def start(self, info: SessionInfo, session: object) -> None:
        """Deliver on_session_start on the running loop in the background (once a call)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            if info.job_id in self._starts:
                return
            self._starts[info.job_id] = done
        observers = list(self._observers())
        if not observers:
            done.set_result(None)
            return
        task = asyncio.get_running_loop().create_task(
            notify(observers, "on_session_start", info, session, timeout=OBSERVER_TIMEOUT),
            name=f"observers:start:{info.job_id}",
        )
        with self._lock:
            self._start_tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            with self._lock:
                self._start_tasks.discard(t)
            if not done.done():
                done.set_result(None)

        task.add_done_callback(finished)

    def end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        """Deliver on_session_end on the running (worker's) loop, after the call's start."""
        with self._lock:
            started = self._starts.pop(info.job_id, None)
        observers = list(self._observers())
        if not observers:
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver_end(observers, info, outcome, started),
            name=f"observers:end:{info.job_id}",
        )
        self._ends[task] = info
        task.add_done_callback(lambda t: self._ends.pop(t, None))

    async def _deliver_end(
        self,
        observers: list[SessionObserver],
        info: SessionInfo,
        outcome: SessionOutcome,
        started: concurrent.futures.Future[None] | None,
    ) -> None:
        if started is None:
            # the call ended before it had a session: its observers still hear it began
            await notify(observers, "on_session_start", info, None, timeout=OBSERVER_TIMEOUT)
        else:
            # the start runs on the call's loop, which may be gone: never wait past its bound
            bound = OBSERVER_TIMEOUT * len(observers) + 1.0
            try:
                await asyncio.wait_for(asyncio.wrap_future(started), bound)
            except TimeoutError:
                logger.warning("on_session_start of call %s never finished", info.job_id)
        await notify(observers, "on_session_end", info, outcome, timeout=OBSERVER_TIMEOUT)

    @property
    def pending(self) -> int:
        return len(self._ends)

    async def flush(self, timeout: float) -> list[SessionInfo]:
        """Wait up to `timeout` for pending end deliveries; returns the calls abandoned."""
        waiting = dict(self._ends)
        if not waiting:
            return []
        _, late = await asyncio.wait(list(waiting), timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)
        return [waiting[t] for t in late]
