"""Bounding what a flood of identical events costs: the first one, then one a window.

Outsiders control how often some events happen (malformed offers, wrong admin tokens);
each must stay visible without letting a flood fill the audit file or the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class FloodGate:
    """Lets the first event of a kind through, then at most one per `window` seconds;
    the one let through carries how many were held back since the last."""

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, kind: str) -> int | None:
        """None: hold this one back. Otherwise: let it through; the number returned is how
        many of this kind were held back before it."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.window:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            if len(self._last) > 1024:
                self._last.clear()
            self._last[kind] = now
            return self._held.pop(kind, 0)
