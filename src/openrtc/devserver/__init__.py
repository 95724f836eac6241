"""A loopback LiveKit dispatch server for tests, `openrtc dev`, rehearsals and benchmarks.

It speaks the real worker protocol, so an unmodified `livekit.agents.AgentServer`
registers, takes offers, runs jobs, reconnects and migrates jobs against it.
"""

from __future__ import annotations

from .client import DevServerClient
from .errors import (
    DevServerClientError,
    DevServerError,
    InvalidDispatchError,
    JobNotActiveError,
    UnknownJobError,
)
from .records import DevEvent, JobRecord, JobState, Offer, WorkerRecord
from .server import DispatchServer

__all__ = [
    "DevEvent",
    "DevServerClient",
    "DevServerClientError",
    "DevServerError",
    "DispatchServer",
    "InvalidDispatchError",
    "JobNotActiveError",
    "JobRecord",
    "JobState",
    "Offer",
    "UnknownJobError",
    "WorkerRecord",
]
