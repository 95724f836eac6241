"""Dispatch request checks and the JSON shape of the records."""

from __future__ import annotations

import json

import pytest

from openrtc.devserver import InvalidDispatchError, JobRecord, JobState, Offer
from openrtc.devserver.request import DispatchRequest


def test_dicts_become_json_and_a_room_is_generated() -> None:
    req = DispatchRequest.build(metadata={"a": 1}, room_metadata={"t": "x"})
    assert json.loads(req.metadata) == {"a": 1}
    assert json.loads(req.room_metadata) == {"t": "x"}
    assert req.room.startswith("room-") and len(req.room) > len("room-")
    assert DispatchRequest.build().room != DispatchRequest.build().room
    assert (req.agent_name, req.deadline) == ("", None)


def test_strings_pass_through_untouched() -> None:
    req = DispatchRequest.build(agent_name="a", room="r", metadata="raw", room_metadata="m")
    assert (req.agent_name, req.room, req.metadata, req.room_metadata) == ("a", "r", "raw", "m")


@pytest.mark.parametrize("metadata", [None, "", '{"lang": "de"}', {"lang": "de"}])
def test_simulated_call_is_merged_into_the_metadata_object(metadata: object) -> None:
    req = DispatchRequest.build(metadata=metadata, simulated_call={"turns": [1]})
    decoded = json.loads(req.metadata)
    assert decoded["simulated_call"] == {"turns": [1]}
    assert decoded.get("lang") == (None if not metadata else "de")


@pytest.mark.parametrize("metadata", ["plain", "[1]", "3"])
def test_simulated_call_needs_object_metadata(metadata: str) -> None:
    with pytest.raises(InvalidDispatchError, match="JSON object"):
        DispatchRequest.build(metadata=metadata, simulated_call={})


@pytest.mark.parametrize(
    "fields",
    [
        {"deadline": 0},
        {"deadline": True},
        {"deadline": float("nan")},
        {"metadata": {"x": object()}},
        {"room_metadata": 1},
        {"room": 7},
    ],
)
def test_bad_fields_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidDispatchError):
        DispatchRequest.build(**fields)


def test_records_serialise_to_plain_json() -> None:
    job = JobRecord(
        id="AJ_1",
        dispatch_id="AD_1",
        room="r",
        room_sid="RM_1",
        agent_name="",
        metadata="",
        room_metadata="",
        created_at=1.0,
        offers=[Offer(worker_id="AW_1", available=True, answered_in_ms=2.5)],
    )
    data = json.loads(json.dumps(job.to_dict()))
    assert data["state"] == "pending"
    assert data["offers"] == [{"worker_id": "AW_1", "available": True, "answered_in_ms": 2.5}]
    assert not JobState.RUNNING.final and JobState.DROPPED.final
