"""Which agent a job runs: the chain job metadata > room metadata > room prefix > first."""

from __future__ import annotations

import json

import pytest
from livekit.protocol import agent as lk_proto
from livekit.protocol import models

from openrtc.routing import RouteSource, parse_metadata, resolve, tenant_of

AGENTS = ["sales", "support", "support-tier2"]


def job(metadata: str = "", room: str = "room-1", room_metadata: str = "") -> lk_proto.Job:
    return lk_proto.Job(
        id="AJ_1", metadata=metadata, room=models.Room(name=room, metadata=room_metadata)
    )


def test_job_metadata_wins_over_room_metadata_and_prefix() -> None:
    r = resolve(
        job(json.dumps({"agent": "support"}), "sales-1", json.dumps({"agent": "sales"})), AGENTS
    )
    assert (r.agent, r.source, r.known) == ("support", RouteSource.JOB_METADATA, True)


def test_room_metadata_then_prefix_then_fallback() -> None:
    r = resolve(job("", "sales-7", json.dumps({"agent": "support"})), AGENTS)
    assert (r.agent, r.source) == ("support", RouteSource.ROOM_METADATA)
    r = resolve(job("", "support-tier2-9"), AGENTS)
    assert (r.agent, r.source) == ("support-tier2", RouteSource.ROOM_PREFIX)
    r = resolve(job("", "lobby"), AGENTS)
    assert (r.agent, r.source, r.explicit) == ("sales", RouteSource.FALLBACK, False)


@pytest.mark.parametrize("raw", ["", "   ", "not json", "[1,2]", '"sales"', "42", "null"])
def test_blank_non_json_or_scalar_metadata_is_ignored(raw: str) -> None:
    assert parse_metadata(raw) == {}
    assert resolve(job(raw, "support-3"), AGENTS).source is RouteSource.ROOM_PREFIX


def test_unknown_agent_is_marked_not_known() -> None:
    r = resolve(job(json.dumps({"agent": "billing"})), AGENTS)
    assert (r.agent, r.known) == ("billing", False)


def test_custom_router_first_and_none_falls_through() -> None:
    class Req:
        def __init__(self, j: lk_proto.Job) -> None:
            self.job = j

    j = job(json.dumps({"agent": "sales"}))
    picked = resolve(j, AGENTS, router=lambda req: "support", request=Req(j))  # type: ignore[arg-type]
    assert (picked.agent, picked.source) == ("support", RouteSource.ROUTER)
    through = resolve(j, AGENTS, router=lambda req: None, request=Req(j))  # type: ignore[arg-type]
    assert (through.agent, through.source) == ("sales", RouteSource.JOB_METADATA)


def test_tenant_defaults() -> None:
    assert tenant_of(job(json.dumps({"tenant": "acme"}))) == "acme"
    assert tenant_of(job("")) == "default"
    assert tenant_of(job(json.dumps({"tenant": 5}))) == "default"
