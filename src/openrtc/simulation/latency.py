"""Turn latency as the simulated caller hears it, summed over every call in this process.

A turn's latency is the time from the end of the caller's speech (the real-time end of
the last frame of its utterance, on the microphone's own schedule) to the first frame of
the agent's reply audio starting to play in the caller's earpiece. It holds everything a
person on the line would wait through: audio queued behind a busy loop, the VAD and the
end-of-turn model deciding the turn is over, STT, LLM, TTS and playback. Every audio turn
answered with audio is added to `TURN_LATENCY`, a cumulative histogram that readers
compare between two snapshots (the call stats in `/snapshot` carry it).
"""

from __future__ import annotations

import bisect
import threading


def _edges() -> tuple[float, ...]:
    # 5 ms steps to 5 s: a 50 ms budget is 10 steps wherever turns land (a turn the
    # end-of-turn model finds unfinished waits livekit's 3 s max endpointing delay)
    fine = [5.0 * i for i in range(1, 1001)]
    coarse = [5000.0 + 1000.0 * i for i in range(1, 26)]  # to 30 s, a reply's timeout
    return tuple(fine + coarse)


TURN_LATENCY_EDGES_MS = _edges()
"""Upper bounds of the histogram's buckets (ms); one more bucket counts what is above."""


class TurnLatencyTotals:
    """Cumulative histogram of turn latencies (ms), shared by every call of a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * (len(TURN_LATENCY_EDGES_MS) + 1)

    def add(self, ms: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(TURN_LATENCY_EDGES_MS, ms)] += 1

    def snapshot(self) -> list[int]:
        with self._lock:
            return list(self._counts)


TURN_LATENCY = TurnLatencyTotals()
