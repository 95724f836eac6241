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


class SimulatedRoomError(RuntimeError):
    """Agent code asked a simulated room for media, which a simulated call does not have."""


def _needs_media(name: str) -> Any:
    async def refuse(self: SimulatedLocalParticipant, *args: Any, **kwargs: Any) -> Any:
        raise SimulatedRoomError(
            f"{name}() needs a LiveKit room with media; a simulated call has none. Guard it "
            "with `isinstance(ctx.room, openrtc.simulation.SimulatedRoom)` to skip it in "
            "simulated calls."
        )

    refuse.__name__ = name
    return refuse


def _kept(name: str) -> Any:
    async def keep(self: SimulatedLocalParticipant, *args: Any, **kwargs: Any) -> None:
        self.sent.append((name, args, kwargs))

    keep.__name__ = name
    return keep


class SimulatedLocalParticipant(rtc.LocalParticipant):
    """The agent's own participant in a simulated room.

    Data, text, DTMF, transcriptions and its own name, metadata and attributes are kept in
    `sent` (nobody is in the room to receive them); publishing tracks, streams and RPC
    need a real room and raise `SimulatedRoomError` with one sentence saying so.
    """

    sent: list[tuple[str, tuple[Any, ...], dict[str, Any]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = []

    publish_data = _kept("publish_data")
    publish_dtmf = _kept("publish_dtmf")
    publish_transcription = _kept("publish_transcription")
    send_text = _kept("send_text")
    set_metadata = _kept("set_metadata")
    set_name = _kept("set_name")
    set_attributes = _kept("set_attributes")
    perform_rpc = _needs_media("perform_rpc")
    stream_text = _needs_media("stream_text")
    stream_bytes = _needs_media("stream_bytes")
    send_bytes = _needs_media("send_bytes")
    send_file = _needs_media("send_file")
    publish_track = _needs_media("publish_track")
    publish_data_track = _needs_media("publish_data_track")
    unpublish_track = _needs_media("unpublish_track")


class SimulatedRoom(rtc.Room):
    """Connected from the start, holding one caller; connect and disconnect are local."""

    def __init__(self, info: RunningJobInfo, script: CallScript) -> None:
        super().__init__()
        _lk.describe_room(self, info)
        self._connected = True
        caller = _lk.detached_participant(
            caller_identity(info.job.id), "simulated caller", script.caller_attributes
        )
        self._participants = {caller.identity: caller}
        identity = info.accept_arguments.identity or f"agent-{info.job.id}"
        self._local = _lk.detached_local_participant(self, identity, SimulatedLocalParticipant)

    @property
    def remote_participants(self) -> Mapping[str, rtc.RemoteParticipant]:
        return self._participants

    @property
    def local_participant(self) -> SimulatedLocalParticipant:
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
