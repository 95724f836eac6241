"""Which registered agent a job runs: metadata, room metadata, room prefix, fallback."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from livekit.agents import JobRequest
from livekit.protocol import agent as lk_proto

Router = Callable[[JobRequest], str | None]
"""A custom route: the job request in, an agent name (or None to use the chain) out."""


class RouteSource(StrEnum):
    ROUTER = "router"
    JOB_METADATA = "job_metadata"
    ROOM_METADATA = "room_metadata"
    ROOM_PREFIX = "room_prefix"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class Route:
    """The outcome of routing: an agent name and how it was chosen.

    `known` is False when the job named an agent this pool does not have; such a
    job is refused at offer time rather than accepted and crashed.
    """

    agent: str | None
    source: RouteSource | None
    known: bool

    @property
    def explicit(self) -> bool:
        return self.source not in (None, RouteSource.FALLBACK)


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """A JSON object from metadata; blank, non-JSON or non-object metadata gives {}."""
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _named(meta: dict[str, Any]) -> str | None:
    name = meta.get("agent")
    return name if isinstance(name, str) and name.strip() else None


def resolve(
    job: lk_proto.Job,
    agents: Sequence[str],
    *,
    router: Router | None = None,
    request: JobRequest | None = None,
) -> Route:
    """First match wins: router, job metadata, room metadata, room-name prefix, first agent."""
    if router is not None and request is not None:
        chosen = router(request)
        if chosen is not None:
            return Route(chosen, RouteSource.ROUTER, chosen in agents)
    for source, meta in (
        (RouteSource.JOB_METADATA, parse_metadata(job.metadata)),
        (RouteSource.ROOM_METADATA, parse_metadata(job.room.metadata)),
    ):
        name = _named(meta)
        if name is not None:
            return Route(name, source, name in agents)
    room = job.room.name
    for name in sorted(agents, key=len, reverse=True):
        if room.startswith(f"{name}-"):
            return Route(name, RouteSource.ROOM_PREFIX, True)
    if agents:
        return Route(agents[0], RouteSource.FALLBACK, True)
    return Route(None, None, False)


def tenant_of(job: lk_proto.Job) -> str:
    """The job's tenant from its metadata; jobs that name none belong to "default"."""
    tenant = parse_metadata(job.metadata).get("tenant")
    return tenant if isinstance(tenant, str) and tenant.strip() else "default"
