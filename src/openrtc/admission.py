"""Deciding, at the moment an offer arrives, whether this worker takes the call.

The decision is synchronous on the event loop, so counts cannot move between the
check and the reservation: caps are exact even when many offers arrive together.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from .config import Limits
from .lifecycle import WorkerState
from .routing import Route

if TYPE_CHECKING:
    from livekit.agents import JobRequest


class RejectReason(StrEnum):
    STARTING = "starting"
    DRAINING = "draining"
    NOT_MEMBER = "not_member"
    AT_CAPACITY = "at_capacity"
    OVERLOADED = "overloaded"
    """The worker's measured load (loop lag, VAD backlog, CPU) reached --load-threshold."""
    AGENT_AT_CAPACITY = "agent_at_capacity"
    TENANT_AT_CAPACITY = "tenant_at_capacity"
    UNKNOWN_AGENT = "unknown_agent"
    UNREGISTERED_ROOM = "unregistered_room"
    REQUEST_FNC = "request_fnc"
    TENANT_UNSIGNED = "tenant_unsigned"
    TENANT_FORGED = "tenant_forged"
    TENANT_CLAIM_EXPIRED = "tenant_claim_expired"
    TENANT_CLAIM_MISMATCH = "tenant_claim_mismatch"
    TENANT_UNKNOWN = "tenant_unknown"
    TENANT_CONFIG_ERROR = "tenant_config_error"
    TENANT_CIRCUIT_OPEN = "tenant_circuit_open"
    DISPATCH_UNREACHABLE = "dispatch_unreachable"
    INVALID_JOB = "invalid_job"
    AUDIT_BACKLOG = "audit_backlog"


Caps = Limits
"""The caps admission checks are the pool's `Limits` group."""


@dataclass(frozen=True)
class Admit:
    """The offer is taken: the call will run `agent` for `tenant`."""

    route: Route
    agent: str
    tenant: str


@dataclass(frozen=True)
class Refuse:
    """The offer is refused, with a reason (counted and audited) and a one-line detail."""

    reason: RejectReason | str
    detail: str

    @property
    def reason_name(self) -> str:
        return str(getattr(self.reason, "value", self.reason))


AdmissionCheck = Callable[["JobRequest", str, str], Refuse | None]
"""check(request, agent, tenant) -> Refuse or None, run at offer time before the caps."""


@dataclass
class Ledger:
    """Calls admitted (reserved at offer time, or running), counted by agent and tenant."""

    by_job: dict[str, tuple[str, str]] = field(default_factory=dict)
    agents: Counter[str] = field(default_factory=Counter)
    tenants: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return len(self.by_job)

    def admit(self, job_id: str, agent: str, tenant: str) -> None:
        if job_id in self.by_job:
            return
        self.by_job[job_id] = (agent, tenant)
        self.agents[agent] += 1
        self.tenants[tenant] += 1

    def release(self, job_id: str) -> bool:
        entry = self.by_job.pop(job_id, None)
        if entry is None:
            return False
        agent, tenant = entry
        self.agents[agent] -= 1
        self.tenants[tenant] -= 1
        if self.agents[agent] <= 0:
            del self.agents[agent]
        if self.tenants[tenant] <= 0:
            del self.tenants[tenant]
        return True


ANSWER_BUCKETS_MS = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 25.0, 50.0, 100.0, 250.0)


@dataclass
class AnswerTimes:
    """How long this worker took to answer offers, as histogram buckets (ms).

    Timed from the moment the socket data holding the offer reached the worker's read
    loop to the moment its answer was written back. An offer read behind others from the
    same socket data counts its wait for them; data that waited in the kernel while the
    loop was busy elsewhere does not (the server's round trip holds that).
    """

    counts: list[int] = field(default_factory=lambda: [0] * (len(ANSWER_BUCKETS_MS) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(ANSWER_BUCKETS_MS, seconds * 1000)] += 1
        self.total_s += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound in ms, answers at or under it), ending with "+Inf"."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(str, ANSWER_BUCKETS_MS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "count": sum(self.counts),
            "sum_ms": round(self.total_s * 1000, 3),
            "le_ms": dict(self.cumulative()),
        }


def check(
    state: WorkerState, ledger: Ledger, caps: Caps, agent: str, tenant: str
) -> RejectReason | None:
    """The reason to refuse, or None to admit."""
    if state is WorkerState.STARTING:
        return RejectReason.STARTING
    if state.is_draining or state is WorkerState.STOPPED:
        return RejectReason.DRAINING
    if state is WorkerState.NOT_MEMBER:
        return RejectReason.NOT_MEMBER
    if caps.max_sessions is not None and ledger.total >= caps.max_sessions:
        return RejectReason.AT_CAPACITY
    if caps.per_agent is not None and ledger.agents[agent] >= caps.per_agent:
        return RejectReason.AGENT_AT_CAPACITY
    if caps.per_tenant is not None and ledger.tenants[tenant] >= caps.per_tenant:
        return RejectReason.TENANT_AT_CAPACITY
    return None
