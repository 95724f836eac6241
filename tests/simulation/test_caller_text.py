"""Text-mode simulated calls against real AgentSessions on shared fake providers."""

from __future__ import annotations

import asyncio
import re

from livekit.agents import Agent, AgentSession, llm

from openrtc.simulation import CallScript, run_simulated_call
from openrtc.testing import FakeLLM

from .conftest import Providers, SessionFactory

SALES = "You are Sales.\nHelp the caller buy things."
SUPPORT = "You are Support.\nFix the caller's problems."


async def test_three_turns_are_answered_by_the_right_agent(make_session: SessionFactory) -> None:
    turns = ("hello", "I would like to book a table", "thank you, goodbye")
    transcript = await run_simulated_call(
        make_session(), Agent(instructions=SALES), CallScript(turns=turns), call_id="call-1"
    )
    assert transcript.completed is True, transcript.error
    assert transcript.error is None
    assert transcript.turns == list(turns)
    assert len(transcript.replies) == 3
    for turn, reply in zip(turns, transcript.replies, strict=True):
        assert "You are Sales" in reply
        assert f"you said: {turn}" in reply
    assert transcript.call_id == "call-1" and transcript.mode == "text"
    assert transcript.started_at <= transcript.ended_at
    assert transcript.to_dict()["replies"] == transcript.replies


async def test_ten_concurrent_calls_each_hear_only_their_own_caller(
    make_session: SessionFactory, providers: Providers
) -> None:
    providers.llm.latency = 0.01

    async def call(i: int) -> tuple[str, list[str], list[str]]:
        instructions = SALES if i % 2 == 0 else SUPPORT
        script = CallScript(
            turns=tuple(f"caller {i} says thing {k}" for k in range(3)), pause_s=0.01 * (i % 4)
        )
        t = await run_simulated_call(
            make_session(), Agent(instructions=instructions), script, call_id=f"call-{i}"
        )
        assert t.completed, t.error
        return instructions.splitlines()[0], t.turns, t.replies

    results = await asyncio.gather(*(asyncio.create_task(call(i)) for i in range(10)))
    for i, (who, turns, replies) in enumerate(results):
        assert replies == [f"{who} | you said: {turn}" for turn in turns]
        callers = {int(n) for n in re.findall(r"caller (\d+)", " ".join(replies))}
        assert callers == {i}, f"call {i} heard {callers}"
    assert providers.llm.requests == 30


async def test_greeting_is_said_before_the_first_turn(make_session: SessionFactory) -> None:
    transcript = await run_simulated_call(
        make_session(),
        Agent(instructions=SALES),
        CallScript(turns=("hi",)),
        call_id="g",
        greeting="Thanks for calling Acme.",
    )
    assert transcript.completed, transcript.error
    assert transcript.greeting == "Thanks for calling Acme."
    assert transcript.replies == ["You are Sales. | you said: hi"]


class _Opener(Agent):
    async def on_enter(self) -> None:
        self.session.generate_reply()


async def test_expected_greeting_from_the_agent_is_recorded(make_session: SessionFactory) -> None:
    transcript = await run_simulated_call(
        make_session(),
        _Opener(instructions=SUPPORT),
        CallScript(turns=("my router is broken",), expect_greeting=True),
        call_id="opener",
    )
    assert transcript.completed, transcript.error
    assert transcript.greeting == "You are Support. | you said: (no user input)"
    assert transcript.replies == ["You are Support. | you said: my router is broken"]


async def test_missing_expected_greeting_fails_the_call(make_session: SessionFactory) -> None:
    transcript = await run_simulated_call(
        make_session(),
        Agent(instructions=SALES),
        CallScript(turns=("hi",), expect_greeting=True),
        call_id="silent",
        turn_timeout=0.3,
    )
    assert transcript.completed is False
    assert transcript.error == "timed out after 0.3 s waiting for a greeting from the agent"
    assert transcript.replies == []


async def test_a_failing_reply_ends_the_call_with_the_error(make_session: SessionFactory) -> None:
    transcript = await run_simulated_call(
        make_session(),
        Agent(instructions=SALES),
        CallScript(turns=("hello", "this breaks [fail]", "never said")),
        call_id="broken",
    )
    assert transcript.completed is False
    assert transcript.error is not None
    assert "APIConnectionError" in transcript.error and "turn 2" in transcript.error
    assert transcript.replies == ["You are Sales. | you said: hello"]
    assert transcript.turns == ["hello", "this breaks [fail]"]


async def test_hold_keeps_the_line_open_and_the_session_is_left_running(
    make_session: SessionFactory,
) -> None:
    session = make_session()
    transcript = await run_simulated_call(
        session,
        Agent(instructions=SALES),
        CallScript(turns=("hi",), hold_s=0.3, pause_s=0),
        call_id="hold",
    )
    assert transcript.completed, transcript.error
    assert transcript.duration_s >= 0.3
    handle = session.generate_reply(user_input="still there?")
    await asyncio.wait_for(handle.wait_for_playout(), 5)
    texts = [i.text_content for i in handle.chat_items if isinstance(i, llm.ChatMessage)]
    assert texts == ["You are Sales. | you said: still there?"]


async def test_max_duration_hangs_up_during_a_long_hold(make_session: SessionFactory) -> None:
    transcript = await asyncio.wait_for(
        run_simulated_call(
            make_session(),
            Agent(instructions=SALES),
            CallScript(turns=("hi",), hold_s=60, max_duration_s=0.5),
            call_id="capped",
        ),
        10,
    )
    assert transcript.completed is True and transcript.error is None
    assert transcript.replies == ["You are Sales. | you said: hi"]


async def test_max_duration_before_the_last_reply_fails_the_call(
    make_session: SessionFactory, providers: Providers
) -> None:
    providers.llm.latency = 30
    transcript = await asyncio.wait_for(
        run_simulated_call(
            make_session(),
            Agent(instructions=SALES),
            CallScript(turns=("hi", "again"), max_duration_s=0.5),
            call_id="slow",
        ),
        10,
    )
    assert transcript.completed is False
    assert transcript.error == "the call reached max_duration_s=0.5 after 0 of 2 replies"


async def test_session_closing_mid_call_is_reported(
    make_session: SessionFactory, providers: Providers
) -> None:
    providers.llm.latency = 30
    session = make_session()
    user_spoke = asyncio.Event()
    session.on(
        "conversation_item_added",
        lambda ev: user_spoke.set() if getattr(ev.item, "role", None) == "user" else None,
    )
    call = asyncio.create_task(
        run_simulated_call(
            session, Agent(instructions=SALES), CallScript(turns=("hi",)), call_id="dropped"
        )
    )
    await asyncio.wait_for(user_spoke.wait(), 10)
    await session.aclose()
    transcript = await asyncio.wait_for(call, 10)
    assert transcript.completed is False
    assert transcript.error is not None
    assert "interrupted" in transcript.error or "closed" in transcript.error
    assert transcript.replies == []


async def test_one_calls_llm_failure_is_seen_by_every_session_sharing_the_llm(
    make_session: SessionFactory,
) -> None:
    """A provider emits its errors on the shared instance, so every session counts them.

    This pins the framework behaviour a worker that shares providers must plan for: a
    failure in one call lands in every other call's error events and error budget.
    """
    bystander = make_session()
    seen: list[object] = []
    bystander.on("error", seen.append)
    await bystander.start(Agent(instructions=SUPPORT), record=False)
    failing = await run_simulated_call(
        make_session(), Agent(instructions=SALES), CallScript(turns=("[fail]",)), call_id="x"
    )
    assert failing.completed is False
    assert len(seen) == 1
    handle = bystander.generate_reply(user_input="are you ok?")
    await asyncio.wait_for(handle.wait_for_playout(), 5)
    assert handle.exception() is None


async def test_audio_mode_needs_an_stt() -> None:
    session: AgentSession[None] = AgentSession(llm=FakeLLM(), vad=None)
    transcript = await run_simulated_call(
        session, Agent(instructions=SALES), CallScript(turns=("hi",), mode="audio"), call_id="a"
    )
    assert transcript.completed is False
    assert transcript.error is not None and "needs a session with an STT" in transcript.error
    await session.aclose()
