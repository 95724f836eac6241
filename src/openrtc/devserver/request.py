"""Validating and normalising a dispatch request, shared by the Python and HTTP APIs.

LiveKit carries job and room metadata as strings; callers may pass dicts, and a
simulated caller's script rides inside the job metadata object, so the merging and
the type checks live here, once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..simulation.script import SIMULATED_CALL_KEY
from .errors import InvalidDispatchError
from .records import new_id

FIELDS = ("agent_name", "room", "metadata", "room_metadata", "simulated_call", "deadline")


@dataclass(frozen=True)
class DispatchRequest:
    """A checked dispatch: metadata already encoded as the strings the protocol carries."""

    agent_name: str
    room: str
    metadata: str
    room_metadata: str
    deadline: float | None

    @classmethod
    def build(
        cls,
        *,
        agent_name: Any = "",
        room: Any = None,
        metadata: Any = None,
        room_metadata: Any = None,
        simulated_call: Any = None,
        deadline: Any = None,
    ) -> DispatchRequest:
        """Check every field; raise InvalidDispatchError naming the first bad one."""
        if not isinstance(agent_name, str):
            raise InvalidDispatchError("agent_name must be a string ('' for unnamed agents).")
        if room is None:
            room = f"room-{new_id('', 8)}"
        elif not isinstance(room, str) or not room:
            raise InvalidDispatchError("room must be a non-empty string, or omitted for a new one.")
        return cls(
            agent_name=agent_name,
            room=room,
            metadata=_job_metadata(metadata, simulated_call),
            room_metadata=_as_text(room_metadata, "room_metadata"),
            deadline=_deadline(deadline),
        )

    @classmethod
    def from_json(cls, body: Any) -> DispatchRequest:
        """Build from a decoded JSON body, refusing fields this server does not know."""
        if not isinstance(body, dict):
            raise InvalidDispatchError("the request body must be a JSON object.")
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise InvalidDispatchError(
                f"unknown field {unknown[0]!r}; allowed fields are {', '.join(FIELDS)}."
            )
        return cls.build(**body)


def _as_text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _dumps(value, name)
    raise InvalidDispatchError(f"{name} must be a string or a JSON object.")


def _job_metadata(metadata: Any, simulated_call: Any) -> str:
    if simulated_call is None:
        return _as_text(metadata, "metadata")
    if not isinstance(simulated_call, dict):
        raise InvalidDispatchError("simulated_call must be a JSON object (the caller's script).")
    merged = _as_object(metadata)
    merged[SIMULATED_CALL_KEY] = simulated_call
    return _dumps(merged, "metadata")


def _as_object(metadata: Any) -> dict[str, Any]:
    if metadata is None or metadata == "":
        return {}
    if isinstance(metadata, dict):
        return dict(metadata)
    if isinstance(metadata, str):
        try:
            decoded = json.loads(metadata)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
    raise InvalidDispatchError("metadata must be a JSON object when simulated_call is given.")


def _dumps(value: dict[str, Any], name: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        message = f"{name} holds a value that cannot be encoded as JSON."
        raise InvalidDispatchError(message) from None


def _deadline(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidDispatchError("deadline must be a number of seconds, or omitted.")
    if value <= 0:
        raise InvalidDispatchError("deadline must be more than 0 seconds.")
    return float(value)
