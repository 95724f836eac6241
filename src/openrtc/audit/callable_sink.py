"""The user's audit callable (`audit_sink=`), run on its own thread.

A callable that is slow, hangs or raises must never hold up `AuditLog.emit()`, which
runs on the event loop and under the log's lock: the callable gets the records in seq
order from a bounded queue on a thread of its own. A failure is counted by reason
(`/metrics`, `openrtc top`) and logged once per run of failures; a delivery that takes
longer than its timeout is counted as `timeout` while the queue keeps filling; a full
queue drops the newest records and counts them (`queue_full`), so memory stays bounded.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .event import AuditEvent

logger = logging.getLogger("openrtc.audit")

NAME = "sink"
CAPACITY = 10_000


class FailureCounter(Protocol):
    def count_failure(self, sink: str, reason: str, count: int = 1) -> None: ...


class CallableSink:
    """Delivers each record to `deliver(event)` on a thread, in order, never blocking."""

    def __init__(
        self,
        deliver: Callable[[AuditEvent], None],
        counter: FailureCounter,
        *,
        timeout: float = 5.0,
        capacity: int = CAPACITY,
    ) -> None:
        self._deliver = deliver
        self._counter = counter
        self._timeout = timeout
        self._capacity = capacity
        self._queue: collections.deque[AuditEvent] = collections.deque()
        self._cond = threading.Condition()
        self._busy_since: float | None = None
        self._timed_out = False
        self._failing = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="openrtc-audit-sink", daemon=True)
        self._thread.start()

    def offer(self, event: AuditEvent) -> None:
        """Queue one record (called under the log's lock: never waits)."""
        with self._cond:
            busy = self._busy_since
            stuck = 0.0 if busy is None else time.monotonic() - busy
            if stuck > self._timeout and not self._timed_out:
                self._timed_out = True
                self._counter.count_failure(NAME, "timeout")
                logger.error(
                    "audit sink has not returned for %.1fs (seq %d waits); records queue",
                    stuck,
                    event.seq,
                )
            if self._closing or len(self._queue) >= self._capacity:
                self._counter.count_failure(NAME, "queue_full")
                return
            self._queue.append(event)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                event = self._queue.popleft()
                self._busy_since = time.monotonic()
            try:
                self._deliver(event)
            except Exception as exc:
                self._counter.count_failure(NAME, type(exc).__name__)
                if not self._failing:
                    logger.error(
                        "audit sink failed for seq %d (%s): %s",
                        event.seq,
                        event.event,
                        type(exc).__name__,
                    )
                self._failing = True
            else:
                self._failing = False
            finally:
                with self._cond:
                    self._busy_since = None
                    self._timed_out = False
                    self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued record was delivered; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy_since is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float) -> bool:
        """Deliver what is queued (up to `timeout`), then stop the thread."""
        delivered = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(0.1)
        return delivered
