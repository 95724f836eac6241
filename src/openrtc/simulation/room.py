"""A per-job simulated room: what agent code sees of the room during a simulated call.

The call's media never touches a room (the simulated caller feeds the session directly),
but agent code still reads `ctx.room`, calls `ctx.connect()` and waits for its caller.
Each simulated job gets its own `SimulatedRoom`: connected, named after the job's room,
with the caller in it as a remote participant carrying the script's attributes. Unlike
livekit's console `MockRoom`, which is one shared mock for every job, no two calls share
one, so code that keys state on the room name or sid sees each call apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livekit import rtc
from livekit.agents.job import RunningJobInfo

from .. import _lk
from .script import CallScript


def caller_identity(job_id: str) -> str:
    return f"caller-{job_id}"


class SimulatedRoom(rtc.Room):
    """Connected from the start, holding one caller; connect and disconnect are local."""

    def __init__(self, info: RunningJobInfo, script: CallScript) -> None:
        super().__init__()
        _lk.describe_room(self, info)
        self._connected = True
        caller = _lk.detached_participant(
            caller_identity(info.job.id), "simulated caller", script.caller_attributes
        )
        self._participants = {caller.sid: caller}
        identity = info.accept_arguments.identity or f"agent-{info.job.id}"
        self._local = _lk.detached_local_participant(self, identity)

    @property
    def remote_participants(self) -> Mapping[str, rtc.RemoteParticipant]:
        return self._participants

    @property
    def local_participant(self) -> rtc.LocalParticipant:
        return self._local

    def isconnected(self) -> bool:
        return self._connected

    @property
    def connection_state(self) -> rtc.ConnectionState.ValueType:
        if self._connected:
            return rtc.ConnectionState.CONN_CONNECTED
        return rtc.ConnectionState.CONN_DISCONNECTED

    @property
    async def sid(self) -> str:  # type: ignore[override]
        return _lk.room_sid(self)

    async def connect(self, url: str, token: str, options: Any = None) -> None:
        self._connected = True

    async def disconnect(self, *, reason: Any = None) -> None:
        if self._connected:
            self._connected = False
            self.emit("disconnected", reason)


def room_for_simulated_job(info: RunningJobInfo, script_data: object) -> SimulatedRoom | None:
    """The job's simulated room, or None when its script does not parse (the call reports
    the script error itself)."""
    try:
        script = CallScript.from_dict(script_data)
    except ValueError:
        return None
    return SimulatedRoom(info, script)
