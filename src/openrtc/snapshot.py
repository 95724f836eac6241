"""A frozen, JSON-ready picture of one worker at one moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RuntimeSnapshot:
    deployment_version: str
    state: str
    draining: bool
    member: bool | None
    """True/False once a membership manifest is configured; None when none is."""
    worker_id: str
    active_sessions: int
    sessions_by_agent: Mapping[str, int]
    sessions_by_tenant: Mapping[str, int]
    accepted_total: int
    rejected_total: Mapping[str, int]
    outcomes_total: Mapping[str, int]
    max_concurrent_sessions: int | None
    isolation: str
    started_at: float
    taken_at: float
    pid: int
    agents: tuple[str, ...]
    sessions: tuple[Mapping[str, Any], ...] = field(default=())
    dispatch_reachable: bool = True
    """False while the link to the dispatch server is down."""
    offer_answers: Mapping[str, Any] = field(default_factory=dict)
    """How long this worker took to answer offers (`admission.AnswerTimes.to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment_version": self.deployment_version,
            "state": self.state,
            "draining": self.draining,
            "member": self.member,
            "worker_id": self.worker_id,
            "active_sessions": self.active_sessions,
            "sessions_by_agent": dict(self.sessions_by_agent),
            "sessions_by_tenant": dict(self.sessions_by_tenant),
            "accepted_total": self.accepted_total,
            "rejected_total": dict(self.rejected_total),
            "outcomes_total": dict(self.outcomes_total),
            "max_concurrent_sessions": self.max_concurrent_sessions,
            "isolation": self.isolation,
            "started_at": self.started_at,
            "taken_at": self.taken_at,
            "pid": self.pid,
            "agents": list(self.agents),
            "sessions": [dict(s) for s in self.sessions],
            "dispatch_reachable": self.dispatch_reachable,
            "offer_answers": dict(self.offer_answers),
        }
