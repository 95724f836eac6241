"""Event-loop lag: how late a short sleep wakes up. A blocked loop delays every call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger("openrtc.ops")


class LoopLagMonitor:
    def __init__(self, interval: float = 0.1, window: int = 600) -> None:
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=window)
        self.last = 0.0
        self.last_tick = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.observers: list[Callable[[float], None]] = []
        """Called with each sample, in seconds, on the loop (the /metrics histogram)."""

    def start(self) -> None:
        if self._task is None:
            self.last_tick = time.monotonic()
            self._task = asyncio.create_task(self._run(), name="loop_lag_monitor")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.last = max(0.0, now - before - self.interval)
            self.last_tick = now
            self.samples.append(self.last)
            for observe in self.observers:
                try:
                    observe(self.last)
                except Exception:
                    logger.exception("loop lag observer failed")

    def percentile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def stalled_for(self) -> float:
        """Seconds since the monitor last ran: large when the loop is blocked right now."""
        return max(0.0, time.monotonic() - self.last_tick - self.interval)
