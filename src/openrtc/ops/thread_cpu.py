"""CPU time of this process by the part that spent it: call loops, VAD, end-of-turn, rest.

Process CPU says how much a worker costs, not where: the density benchmark needs to
know whether a call's CPU goes to the event loop (per-frame pipeline, decisions), to the
shared VAD's model thread, or to the end-of-turn model. Linux keeps a CPU clock per
thread (`/proc/self/task/<tid>/stat`), so the parts are read, not estimated:

- `loop`: the threads whose event loops run calls (registered by the call-stats lag
  probe when a loop opens its first VAD stream);
- `vad`: the shared VAD's model thread;
- `turn`: the end-of-turn thread and the native threads its model starts; those inherit
  its lowered priority, and no other thread in the process runs nicer;
- `other`: every other thread a reading saw (livekit's FFI threads, the HTTP endpoints);
- `short_lived`: threads no reading saw, which started and exited between two readings:
  the process total minus all the above. In a worker these are mostly the end-of-turn
  model's: livekit's native model starts its helper threads for each prediction and
  joins them before it returns (bench/eot_cost.py counts them).

Counts are cumulative seconds. A thread counts under the part it is known as when read
(a loop's thread joins `loop` from its first call on, with what it spent before); once
it exits it keeps its last reading. Elsewhere than Linux there is no per-thread clock
and `read()` returns None.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..turn import THREAD_NAME as TURN_THREAD
from ..vad import THREAD_NAME as VAD_THREAD

PARTS = ("loop", "vad", "turn", "other", "short_lived")
_TASKS = Path("/proc/self/task")


class ThreadCPU:
    """Cumulative CPU seconds per part; `note_loop_thread()` from each call loop."""

    def __init__(self, tasks: Path = _TASKS) -> None:
        self._tasks = tasks
        self._lock = threading.Lock()
        self._loop_tids: set[int] = set()
        self._live: dict[int, tuple[str, float]] = {}
        """Threads seen at the last reading: their part and CPU seconds then."""
        self._gone = dict.fromkeys(PARTS, 0.0)
        """What threads seen once and since exited had spent, by part."""
        self._tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0

    def note_loop_thread(self) -> None:
        """The calling thread runs an event loop that runs calls."""
        with self._lock:
            self._loop_tids.add(threading.get_native_id())

    def read(self) -> dict[str, float] | None:
        """Seconds of CPU per part since the process started; None without /proc."""
        try:
            entries = [e for e in os.scandir(self._tasks) if e.name.isdigit()]
        except OSError:
            return None
        named = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        rows: list[tuple[int, float, int]] = []
        for entry in entries:
            stat = _read_stat(Path(entry.path) / "stat")
            if stat is not None:
                rows.append((int(entry.name), stat[0] / self._tick, stat[1]))
        if not rows:
            return None
        times = os.times()
        base_nice = min(nice for _, _, nice in rows)
        with self._lock:
            live = {
                tid: (self._part(tid, named.get(tid), nice > base_nice), seconds)
                for tid, seconds, nice in rows
            }
            for tid, (part, seconds) in self._live.items():
                if tid not in live:
                    self._gone[part] += seconds
                    self._loop_tids.discard(tid)
            self._live = live
            parts = dict(self._gone)
            for part, seconds in live.values():
                parts[part] += seconds
        seen = sum(parts.values()) - parts["short_lived"]
        parts["short_lived"] = max(0.0, times.user + times.system - seen)
        return {k: round(v, 3) for k, v in parts.items()}

    def _part(self, tid: int, name: str | None, nicer: bool) -> str:
        if tid in self._loop_tids:
            return "loop"
        if name is not None and name.startswith(VAD_THREAD):
            return "vad"
        if (name is not None and name.startswith(TURN_THREAD)) or (name is None and nicer):
            return "turn"
        return "other"


def _read_stat(path: Path) -> tuple[int, int] | None:
    """(utime + stime in clock ticks, nice) of one thread; None if it just exited."""
    try:
        text = path.read_text()
    except OSError:
        return None
    # the name field is in parentheses and may itself hold spaces or parentheses
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[11]) + int(fields[12]), int(fields[16])
    except (IndexError, ValueError):
        return None


THREAD_CPU = ThreadCPU()
