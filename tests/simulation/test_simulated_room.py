"""Each simulated call gets its own connected room, with its caller in it."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.agents import Agent, get_job_context
from livekit.agents.ipc.mock_room import create_mock_room

from openrtc import AgentPool
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.simulation import CallScript, SimulatedRoomError
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running

SEEN: list[dict[str, Any]] = []


class RoomAware(Agent):
    """Does what agent code does with its room: connect, wait for the caller, read it."""

    def __init__(self) -> None:
        super().__init__(instructions="You are Rooms.")

    async def on_enter(self) -> None:
        ctx = get_job_context()
        await ctx.connect()
        caller = await ctx.wait_for_participant()
        me = ctx.room.local_participant
        await me.publish_data(b"state: listening", topic="ui")
        try:
            await me.perform_rpc(destination_identity=caller.identity, method="x", payload="")
        except SimulatedRoomError as e:
            rpc_error = str(e)
        SEEN.append(
            {
                "job": ctx.job.id,
                "room": ctx.room,
                "name": ctx.room.name,
                "sid": await ctx.room.sid,
                "connected": ctx.room.isconnected(),
                "caller": caller.identity,
                "attributes": dict(caller.attributes),
                "by_identity": ctx.room.remote_participants.get(caller.identity) is caller,
                "me": me.identity,
                "sent": list(me.sent),
                "rpc_error": rpc_error,
            }
        )


async def test_two_simulated_calls_each_see_their_own_room_and_caller(
    devserver: DispatchServer,
) -> None:
    SEEN.clear()
    pool = AgentPool(
        agents={"rooms": RoomAware},
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    phones = {"room-a": "+15550100", "room-b": "+15550199"}
    async with running(pool, devserver):
        jobs = {
            room: await devserver.dispatch(
                room=room,
                simulated_call={
                    "turns": ["hi"],
                    "mode": "text",
                    "hold_s": 0.5,
                    "caller_attributes": {"sip.phoneNumber": phone},
                },
            )
            for room, phone in phones.items()
        }
        for job in jobs.values():
            assert (
                await devserver.wait_job(job.id, {"success", "failed"})
            ).state.value == "success"
    by_job = {s["job"]: s for s in SEEN}
    assert set(by_job) == {j.id for j in jobs.values()}
    for room, job in jobs.items():
        seen = by_job[job.id]
        assert (seen["name"], seen["connected"]) == (room, True)
        assert seen["sid"].startswith("RM_")
        assert seen["caller"] == f"caller-{job.id}"
        assert seen["attributes"] == {"sip.phoneNumber": phones[room]}
        assert seen["room"] is not create_mock_room()
        assert seen["by_identity"] and seen["me"] == f"agent-{job.id}"
        assert seen["sent"] == [("publish_data", (b"state: listening",), {"topic": "ui"})]
        assert seen["rpc_error"].startswith("perform_rpc() needs a LiveKit room with media")
    rooms = [s["room"] for s in SEEN]
    assert rooms[0] is not rooms[1] and rooms[0].name != rooms[1].name


def test_caller_attributes_must_be_strings() -> None:
    script = CallScript.from_dict({"turns": ["hi"], "caller_attributes": {"plan": "gold"}})
    assert script.to_dict()["caller_attributes"] == {"plan": "gold"}
    with pytest.raises(ValueError, match="caller_attributes must map strings to strings"):
        CallScript.from_dict({"turns": ["hi"], "caller_attributes": {"plan": 3}})
