"""CPU of this process's threads that run at its own priority; nicer threads left out.

The end-of-turn model's thread, and the threads the native model starts for each
prediction, run nicer than the process (`openrtc.turn.predictor.NICE`): they only get
the CPU the calls' event loop and VAD leave over, and their own backlog says when that is
not enough. Counting their CPU as load would refuse calls for work that steps aside for
them (in a burst of new calls it is most of the process's CPU). Linux only: niceness is
per thread there and each thread's CPU and niceness are in /proc; elsewhere every thread
counts (`available()` is False and callers read the whole process).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

TASKS = Path("/proc/self/task")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_UTIME, _STIME, _NICE = 11, 12, 16
"""Indexes of utime, stime and nice in a stat line's fields after the command's ')'."""


def available() -> bool:
    return TASKS.is_dir()


def _stat(path: Path) -> tuple[int, int] | None:
    """(CPU ticks, nice) of one thread, or None once it has ended."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[_UTIME]) + int(fields[_STIME]), int(fields[_NICE])


def _threads() -> Iterator[tuple[int, int, int]]:
    """(thread id, CPU ticks, nice) of every live thread of this process."""
    for entry in os.scandir(TASKS):
        stat = _stat(TASKS / entry.name / "stat")
        if stat is not None:
            yield int(entry.name), *stat


class OwnPriorityCpu:
    """CPU seconds this process's threads no nicer than its main thread used between
    readings. A thread that started since the last reading counts from its start; the
    CPU of one that ended in between is lost (threads of that priority here live long)."""

    def __init__(self) -> None:
        self._ticks: dict[int, int] = {}
        self.read()

    def read(self) -> float:
        base = _stat(Path("/proc/self/stat"))
        base_nice = base[1] if base is not None else 0
        ticks: dict[int, int] = {}
        used = 0
        for tid, cpu, nice in _threads():
            ticks[tid] = cpu
            if nice <= base_nice:
                used += cpu - self._ticks.get(tid, 0 if self._ticks else cpu)
        self._ticks = ticks
        return max(0, used) / CLOCK_TICKS
