"""Audio-mode simulated calls: real-time PCM through the real Silero VAD and turn model."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import Agent
from livekit.agents.voice.events import UserStateChangedEvent

from openrtc.simulation import (
    TURN_LATENCY,
    TURN_LATENCY_EDGES_MS,
    CallScript,
    run_simulated_call,
)

from .conftest import Providers, SessionFactory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


async def test_audio_turns_are_heard_by_the_vad_and_answered(
    make_session: SessionFactory, providers: Providers
) -> None:
    session = make_session()
    speaking: list[UserStateChangedEvent] = []
    session.on(
        "user_state_changed", lambda ev: speaking.append(ev) if ev.new_state == "speaking" else None
    )
    turns = ("I would like to book a table", "thank you, goodbye")
    transcript = await run_simulated_call(
        session,
        Agent(instructions="You are Sales.\nTake bookings."),
        CallScript(turns=turns, mode="audio", pause_s=0.1),
        call_id="audio-1",
        greeting="Hello!",
        turn_timeout=15,
    )
    assert transcript.completed, transcript.error
    assert transcript.replies == [f"You are Sales. | you said: {t}" for t in turns]
    assert transcript.greeting == "Hello!"
    assert len(speaking) >= 2, "the VAD heard the caller start speaking on each turn"
    assert transcript.speech_detected == len(speaking)
    assert providers.stt.recognitions >= 2
    assert providers.tts.syntheses >= 3, "the greeting and both replies were spoken"


async def test_concurrent_audio_calls_hear_their_own_caller(
    make_session: SessionFactory, providers: Providers
) -> None:
    agents = {
        "alice": "You are Sales.",
        "bob": "You are Support.",
        "carol": "You are Billing.",
    }

    async def call(name: str) -> None:
        turns = (f"{name} wants a table", f"{name} says goodbye")
        t = await run_simulated_call(
            make_session(),
            Agent(instructions=agents[name]),
            CallScript(turns=turns, mode="audio", pause_s=0.1),
            call_id=name,
            turn_timeout=15,
        )
        assert t.completed, f"{name}: {t.error}"
        assert t.replies == [f"{agents[name]} | you said: {turn}" for turn in turns]
        assert t.speech_detected >= 2

    await asyncio.gather(*(asyncio.create_task(call(name)) for name in agents))


async def test_every_audio_turn_records_its_latency_as_the_caller_heard_it(
    make_session: SessionFactory,
) -> None:
    before = TURN_LATENCY.snapshot()
    turns = ("hello there", "I would like to book a table", "thank you, goodbye")
    transcript = await run_simulated_call(
        make_session(),
        Agent(instructions="You are Sales."),
        CallScript(turns=turns, mode="audio", pause_s=0.1),
        call_id="latency-1",
        turn_timeout=15,
    )
    assert transcript.completed, transcript.error
    latencies = transcript.turn_latency_ms
    assert len(latencies) == len(turns)
    # the session waits for min_silence_duration (0.55 s) of silence and the turn model
    # before it answers; the fake providers answer at once
    assert all(ms is not None and 550 <= ms < 5000 for ms in latencies), latencies
    assert transcript.to_dict()["turn_latency_ms"] == latencies
    added = [a - b for a, b in zip(TURN_LATENCY.snapshot(), before, strict=True)]
    assert sum(added) == len(turns)
    heard = [TURN_LATENCY_EDGES_MS[i] for i, n in enumerate(added) for _ in range(n)]
    assert heard == sorted(
        next(edge for edge in TURN_LATENCY_EDGES_MS if ms <= edge)  # type: ignore[operator]
        for ms in latencies
    )


async def test_text_turns_record_no_audio_latency(make_session: SessionFactory) -> None:
    transcript = await run_simulated_call(
        make_session(),
        Agent(instructions="You are Sales."),
        CallScript(turns=("hi",), mode="text", pause_s=0.0),
        call_id="latency-text",
        turn_timeout=15,
    )
    assert transcript.completed and transcript.turn_latency_ms == []
