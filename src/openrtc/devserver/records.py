"""Plain records of what the dispatch server knows: workers, jobs and the event log.

They are the server's own state objects (the server updates them in place), so tests
and tools can hold one and read its latest state; `to_dict()` gives the JSON shape the
control API returns.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a job is in its life; the last five are final."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNSERVED = "unserved"
    DROPPED = "dropped"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {JobState.SUCCESS, JobState.FAILED, JobState.CANCELLED, JobState.UNSERVED, JobState.DROPPED}
)

WS_AVAILABLE = "WS_AVAILABLE"
WS_FULL = "WS_FULL"


@dataclass
class WorkerRecord:
    """One registered worker connection; a reconnect registers a new record."""

    id: str
    agent_name: str
    version: str
    job_type: str
    connected_at: float
    status: str = WS_AVAILABLE
    load: float = 0.0
    job_count: int = 0
    draining: bool = False
    connected: bool = True
    disconnected_at: float | None = None
    jobs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_name": self.agent_name,
            "version": self.version,
            "job_type": self.job_type,
            "status": self.status,
            "load": self.load,
            "job_count": self.job_count,
            "draining": self.draining,
            "connected": self.connected,
            "connected_at": self.connected_at,
            "disconnected_at": self.disconnected_at,
            "jobs": list(self.jobs),
        }


@dataclass
class Offer:
    """One AvailabilityRequest sent for a job; `available` is None until answered."""

    worker_id: str
    available: bool | None = None
    answered_in_ms: float | None = None
    """The worker's answer time: from the request's frame written to the socket to the
    answer read back (the server's own queueing before the send is not in it)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "available": self.available,
            "answered_in_ms": self.answered_in_ms,
        }


@dataclass
class JobRecord:
    """One dispatched job, from its first offer to its final state."""

    id: str
    dispatch_id: str
    room: str
    room_sid: str
    agent_name: str
    metadata: str
    room_metadata: str
    created_at: float
    state: JobState = JobState.PENDING
    worker_id: str | None = None
    worker_version: str | None = None
    participant_identity: str | None = None
    offers: list[Offer] = field(default_factory=list)
    assigned_at: float | None = None
    running_at: float | None = None
    ended_at: float | None = None
    error: str = ""
    ended_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dispatch_id": self.dispatch_id,
            "room": self.room,
            "room_sid": self.room_sid,
            "agent_name": self.agent_name,
            "metadata": self.metadata,
            "room_metadata": self.room_metadata,
            "state": self.state.value,
            "worker_id": self.worker_id,
            "worker_version": self.worker_version,
            "participant_identity": self.participant_identity,
            "offers": [offer.to_dict() for offer in self.offers],
            "created_at": self.created_at,
            "assigned_at": self.assigned_at,
            "running_at": self.running_at,
            "ended_at": self.ended_at,
            "error": self.error,
            "ended_by": self.ended_by,
        }


@dataclass(frozen=True)
class DevEvent:
    """One notable thing the server saw or did, numbered in order by `seq` (from 1)."""

    seq: int
    ts: float
    kind: str
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "fields": dict(self.fields)}


_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def new_id(prefix: str, length: int = 12) -> str:
    """A LiveKit-style id such as `AJ_x8Kp2...`: prefix plus random base-57 characters."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))
