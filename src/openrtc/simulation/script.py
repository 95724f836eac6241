"""The script a simulated caller follows, as carried in a dispatch's job metadata.

A dispatch that carries `{"simulated_call": CallScript(...).to_dict()}` in its metadata
runs the routed agent's real session against a synthetic caller instead of a room.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

SIMULATED_CALL_KEY = "simulated_call"
"""The job metadata key under which a dispatch carries `CallScript.to_dict()`."""
CallMode = Literal["text", "audio"]
MODES: tuple[CallMode, ...] = ("text", "audio")
_FIELDS = (
    "turns",
    "mode",
    "pause_s",
    "hold_s",
    "max_duration_s",
    "expect_greeting",
    "caller_attributes",
    "frame_ms",
    "noise_dbfs",
)
FRAME_MS_RANGE = (10, 100)
NOISE_DBFS_RANGE = (-90.0, -20.0)
DEFAULT_FRAME_MS = 20
"""The simulated microphone's frame size unless a script sets another: every benchmark
result so far was taken with it. A room delivers 50 ms frames."""


def _seconds(name: str, value: object, *, allow_none: bool = False, positive: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be greater than 0 seconds, got {value!r}.")
    if value < 0:
        raise ValueError(f"{name} must be 0 seconds or more, got {value!r}.")


@dataclass(frozen=True)
class CallScript:
    """What the caller says and how long it stays on the line.

    turns: what the caller says, in order (at least one, none blank).
    mode: "text" feeds turns as typed user input; "audio" speaks them as real-time PCM
        through the session's VAD, turn detector and STT.
    pause_s: the caller's think time after each reply before its next turn.
    hold_s: how long the caller stays on the line after the last reply.
    max_duration_s: hang up after this long whatever the script says (None: no limit).
    expect_greeting: wait for the agent to speak first before the first turn.
    caller_attributes: the caller participant's attributes in the job's simulated room
        (e.g. {"sip.phoneNumber": "+15550100"}), as a SIP or web caller would carry them.
    frame_ms: audio mode: the size of the microphone's frames, in ms (a room delivers 50).
    noise_dbfs: audio mode: a steady noise floor under everything the microphone sends,
        in dBFS RMS (a quiet phone line is about -60); None sends digital silence between
        turns, as every benchmark result so far was taken.
    """

    turns: tuple[str, ...]
    mode: CallMode = "text"
    pause_s: float = 0.2
    hold_s: float = 0.0
    max_duration_s: float | None = None
    expect_greeting: bool = False
    caller_attributes: Mapping[str, str] = field(default_factory=dict, hash=False)
    frame_ms: int = DEFAULT_FRAME_MS
    noise_dbfs: float | None = None

    def __post_init__(self) -> None:
        turns = self.turns
        if isinstance(turns, str) or not isinstance(turns, tuple | list):
            raise ValueError(f"turns must be a list of strings, got {type(turns).__name__}.")
        if not turns:
            raise ValueError("turns must hold at least one thing for the caller to say.")
        for i, turn in enumerate(turns):
            if not isinstance(turn, str) or not turn.strip():
                raise ValueError(f"turns[{i}] must be a non-blank string, got {turn!r}.")
        object.__setattr__(self, "turns", tuple(turns))
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'text' or 'audio', got {self.mode!r}.")
        _seconds("pause_s", self.pause_s)
        _seconds("hold_s", self.hold_s)
        _seconds("max_duration_s", self.max_duration_s, allow_none=True, positive=True)
        if not isinstance(self.expect_greeting, bool):
            raise ValueError(
                f"expect_greeting must be true or false, got {self.expect_greeting!r}."
            )
        attrs = self.caller_attributes
        if not isinstance(attrs, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()
        ):
            raise ValueError(f"caller_attributes must map strings to strings, got {attrs!r}.")
        object.__setattr__(self, "caller_attributes", dict(attrs))
        low, high = FRAME_MS_RANGE
        if (
            isinstance(self.frame_ms, bool)
            or not isinstance(self.frame_ms, int)
            or not low <= self.frame_ms <= high
        ):
            raise ValueError(
                f"frame_ms must be a whole number of ms from {low} to {high}, "
                f"got {self.frame_ms!r}."
            )
        noise = self.noise_dbfs
        quiet, loud = NOISE_DBFS_RANGE
        if noise is not None and (
            isinstance(noise, bool)
            or not isinstance(noise, int | float)
            or not quiet <= noise <= loud
        ):
            raise ValueError(
                f"noise_dbfs must be null or a level from {quiet:g} to {loud:g} dBFS, "
                f"got {noise!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form carried under the job metadata key "simulated_call"."""
        return {
            "turns": list(self.turns),
            "mode": self.mode,
            "pause_s": self.pause_s,
            "hold_s": self.hold_s,
            "max_duration_s": self.max_duration_s,
            "expect_greeting": self.expect_greeting,
            "caller_attributes": dict(self.caller_attributes),
            "frame_ms": self.frame_ms,
            "noise_dbfs": self.noise_dbfs,
        }

    @classmethod
    def from_dict(cls, data: object) -> CallScript:
        """Parse and validate `to_dict()` output; raises ValueError on anything malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a call script must be a JSON object, got {type(data).__name__}.")
        unknown = sorted(str(k) for k in data if k not in _FIELDS)
        if unknown:
            raise ValueError(f"unknown call script field(s) {', '.join(unknown)}; use {_FIELDS}.")
        if "turns" not in data:
            raise ValueError("a call script needs 'turns': the list of things the caller says.")
        turns = data["turns"]
        if isinstance(turns, str) or not isinstance(turns, list | tuple):
            raise ValueError(f"turns must be a list of strings, got {type(turns).__name__}.")
        kwargs: dict[str, Any] = {k: data[k] for k in _FIELDS if k in data}
        kwargs["turns"] = tuple(cast(list[Any], turns))
        return cls(**kwargs)
