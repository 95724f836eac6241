"""Bounded audit volume: a flood of identical refusals becomes one record plus a count.

An outsider who can make the worker refuse something (offers, drain requests) can
repeat it at will; each repetition must not cost a record on disk. The first refusal
of a kind (event, reason, source) in an interval is recorded in full; identical ones
within the interval are only counted, and the count is recorded once when the
interval ends. The number of kinds tracked is bounded too: past `max_kinds`, new
sources share the source "*".
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

OVERFLOW_SOURCE = "*"
"""The shared source of refusals from sources past the tracked limit."""

Kind = tuple[str, str, str]
"""(event, reason, source) of a refusal."""


@dataclasses.dataclass
class _Window:
    since: float
    count: int = 0


@dataclasses.dataclass(frozen=True)
class Repeats:
    """Refusals of one kind counted but not recorded during one interval."""

    event: str
    reason: str
    source: str
    count: int
    interval_s: float


class RefusalWindows:
    """Decides which refusals are recorded in full and collects the counts of the rest."""

    def __init__(
        self,
        interval_s: float = 10.0,
        *,
        max_kinds: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"refusal interval must be positive seconds, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self.max_kinds = max_kinds
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[Kind, _Window] = {}

    def admit(self, event: str, reason: str, source: str) -> tuple[bool, str, list[Repeats]]:
        """(record this one in full?, the source it is counted under, counts now due)."""
        now = self._clock()
        with self._lock:
            due = self._expire(now)
            kind = (event, reason, source)
            if kind not in self._windows and len(self._windows) >= self.max_kinds:
                kind = (event, reason, OVERFLOW_SOURCE)
            window = self._windows.get(kind)
            if window is None:
                self._windows[kind] = _Window(now)
                return True, kind[2], due
            window.count += 1
            return False, kind[2], due

    def due(self, *, everything: bool = False) -> list[Repeats]:
        """Counts of intervals that have ended (all of them with `everything`, at close)."""
        now = self._clock()
        with self._lock:
            return self._expire(now, everything=everything)

    def _expire(self, now: float, *, everything: bool = False) -> list[Repeats]:
        out: list[Repeats] = []
        for kind, window in list(self._windows.items()):
            if everything or now - window.since >= self.interval_s:
                del self._windows[kind]
                if window.count:
                    out.append(Repeats(*kind, window.count, round(now - window.since, 3)))
        return out
