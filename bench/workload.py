"""The calls a density run places: which agent, what the caller says, and when, from a seed.

A verdict that rests on one workload may rest on a favourable one, so every call differs:
its agent, its number of turns, what it says, the caller's think time between a reply
and its next turn, how long it holds the line after its last reply, and the gap before it
is dispatched (exponential, so arrivals come in natural bursts around a mean pace). The
same seed gives the same calls in the same order; another seed, another workload.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from openrtc.simulation import DEFAULT_FRAME_MS, CallScript

AGENTS = ("sales", "support", "booking")
PHRASES = (
    "hello there",
    "I would like to book a table",
    "what time do you open",
    "can I change my reservation",
    "do you have anything for two people tonight",
    "my order has not arrived yet",
    "is there parking nearby",
    "thank you, goodbye",
)


@dataclass(frozen=True)
class PlannedCall:
    agent: str
    script: dict[str, Any]
    """`CallScript.to_dict()`: what the dispatch carries."""
    gap_s: float
    """Seconds to wait before dispatching this call (ramp only; replacements go at once)."""


@dataclass(frozen=True)
class Workload:
    seed: int = 1
    agents: tuple[str, ...] = AGENTS
    turns: tuple[int, int] = (3, 10)
    """Fewest and most turns of one call (inclusive)."""
    pause_s: tuple[float, float] = (0.3, 2.0)
    hold_s: tuple[float, float] = (0.5, 3.0)
    pace_s: float = 0.2
    """Mean gap between two dispatches."""
    frame_ms: int = DEFAULT_FRAME_MS
    """The callers' microphone frames, in ms (a room delivers 50)."""
    noise_dbfs: float | None = None
    """The callers' line noise floor, dBFS RMS; None: digital silence between turns."""

    def __post_init__(self) -> None:
        if not self.agents:
            raise ValueError("a workload needs at least one agent")
        for name, (low, high) in (
            ("turns", self.turns),
            ("pause_s", self.pause_s),
            ("hold_s", self.hold_s),
        ):
            if low < 0 or high < low:
                raise ValueError(f"{name} must be a range low <= high of values >= 0")
        if self.turns[0] < 1:
            raise ValueError("a call needs at least one turn")
        if self.pace_s < 0:
            raise ValueError("pace_s must be 0 or more seconds")
        # raises on a bad frame size or noise level
        CallScript(turns=("check",), frame_ms=self.frame_ms, noise_dbfs=self.noise_dbfs)

    def calls(self) -> Iterator[PlannedCall]:
        """The calls of this workload, endlessly, in a fixed order for the seed."""
        rng = random.Random(self.seed)
        while True:
            count = rng.randint(*self.turns)
            script = CallScript(
                turns=tuple(rng.choice(PHRASES) for _ in range(count)),
                mode="audio",
                pause_s=round(rng.uniform(*self.pause_s), 2),
                hold_s=round(rng.uniform(*self.hold_s), 2),
                frame_ms=self.frame_ms,
                noise_dbfs=self.noise_dbfs,
            )
            gap = rng.expovariate(1 / self.pace_s) if self.pace_s > 0 else 0.0
            yield PlannedCall(rng.choice(self.agents), script.to_dict(), round(gap, 3))

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "agents": list(self.agents),
            "turns_per_call": list(self.turns),
            "pause_s": list(self.pause_s),
            "hold_s": list(self.hold_s),
            "mean_dispatch_gap_s": self.pace_s,
            "phrases": list(PHRASES),
            "mode": "audio",
            "frame_ms": self.frame_ms,
            "noise_dbfs": self.noise_dbfs,
        }
