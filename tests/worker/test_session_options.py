"""What a registration says reaches the call's AgentSession: greetings, kwargs, providers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livekit.agents import Agent, llm
from livekit.agents.utils import http_context

from openrtc import AgentPool
from openrtc.config import PoolConfig, Providers, Runtime
from openrtc.devserver import DispatchServer
from openrtc.sessions import SessionInfo, SessionOutcome
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.worker import models
from tests.harness import running

from .agents import BookingAgent, SalesAgent, SupportAgent

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"
POOL_GREETING = "Thanks for calling Example Co."


class SessionRecorder:
    """An observer that keeps every call's AgentSession, by agent name."""

    def __init__(self) -> None:
        self.sessions: dict[str, Any] = {}

    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        self.sessions[info.agent] = session

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        return None


class LabelledLLM(FakeLLM):
    """A FakeLLM whose replies start with its own speaker line instead of the agent's."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.speaker = label

    def chat(self, *, chat_ctx: llm.ChatContext, **kwargs: Any) -> Any:
        labelled = chat_ctx.copy()
        labelled.items.insert(0, llm.ChatMessage(role="system", content=[self.speaker]))
        return super().chat(chat_ctx=labelled, **kwargs)


def call(turns: tuple[str, ...] = ("hi",)) -> dict[str, object]:
    return {"turns": list(turns), "mode": "text", "pause_s": 0.0}


async def call_each_agent(pool: AgentPool, devserver: DispatchServer) -> dict[str, Any]:
    """One simulated call per registered agent; each call's transcript, by agent name."""
    transcripts: dict[str, Any] = {}
    async with running(pool, devserver):
        for agent in pool.list_agents():
            job = await devserver.dispatch(metadata={"agent": agent}, simulated_call=call())
            done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=20)
            assert done.state.value == "success", done.to_dict()
            transcripts[agent] = pool.transcripts[job.id]
    return transcripts


async def test_an_agents_own_greeting_wins_over_the_pools_default_greeting(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        config=PoolConfig.from_env(
            providers=Providers(greeting=POOL_GREETING), runtime=Runtime(prewarm_models=False)
        )
    )
    pool.discover(EXAMPLES)
    transcripts = await call_each_agent(pool, devserver)
    assert {agent: t.greeting for agent, t in transcripts.items()} == {
        "booking": POOL_GREETING,
        "sales": POOL_GREETING,
        "support": "Support here, what went wrong?",
    }
    assert transcripts["support"].replies[0].startswith("You are Support at Example Co.")


async def test_without_any_greeting_the_agent_waits_for_the_caller(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": SalesAgent},
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    pool.add("support", SupportAgent, greeting="Support speaking.")
    transcripts = await call_each_agent(pool, devserver)
    assert transcripts["sales"].greeting is None
    assert transcripts["support"].greeting == "Support speaking."


async def test_session_kwargs_reach_the_session_of_their_agent_only(
    devserver: DispatchServer,
) -> None:
    recorder = SessionRecorder()
    pool = AgentPool(
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        observers=[recorder],
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    pool.add("sales", SalesAgent, session_kwargs={"max_tool_steps": 7, "user_away_timeout": 42.5})
    pool.add("support", SupportAgent)
    await call_each_agent(pool, devserver)
    sales, support = recorder.sessions["sales"].options, recorder.sessions["support"].options
    assert (sales.max_tool_steps, sales.user_away_timeout) == (7, 42.5)
    assert (support.max_tool_steps, support.user_away_timeout) == (3, 15.0)


async def test_per_agent_providers_override_the_pool_defaults(devserver: DispatchServer) -> None:
    recorder = SessionRecorder()
    default_stt, default_tts = FakeSTT(), FakeTTS()
    own_stt, own_tts = FakeSTT(latency=0.01), FakeTTS(seconds_per_char=0.01)
    pool = AgentPool(
        default_stt=default_stt,
        default_llm=FakeLLM(),
        default_tts=default_tts,
        observers=[recorder],
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    pool.add("sales", SalesAgent)
    pool.add(
        "support",
        SupportAgent,
        stt=own_stt,
        llm=LabelledLLM("Support's own LLM"),
        tts=own_tts,
    )
    pool.add("booking", BookingAgent, llm=LabelledLLM("Booking's own LLM"))
    transcripts = await call_each_agent(pool, devserver)
    assert transcripts["sales"].replies == ["You are Sales. | you said: hi"]
    assert transcripts["support"].replies == ["Support's own LLM | you said: hi"]
    assert transcripts["booking"].replies == ["Booking's own LLM | you said: hi"]
    support, booking = recorder.sessions["support"], recorder.sessions["booking"]
    assert (support.stt.latency, support.tts.seconds_per_char) == (0.01, 0.01)
    assert (booking.stt.latency, booking.tts.seconds_per_char) == (
        default_stt.latency,
        default_tts.seconds_per_char,
    )


def test_provider_strings_are_kept_for_livekit_to_resolve_at_call_time() -> None:
    pool = AgentPool(
        default_stt="deepgram/nova-3",
        default_llm="openai/gpt-4.1-mini",
        default_tts="cartesia/sonic-2",
    )
    pool.add("sales", SalesAgent)
    pool.add("support", SupportAgent, llm="openai/gpt-4o", session_kwargs={"max_tool_steps": 5})
    assert pool.get("support").llm == "openai/gpt-4o"
    assert pool.session_options(pool.get("sales")) == {
        "stt": "deepgram/nova-3",
        "llm": "openai/gpt-4.1-mini",
        "tts": "cartesia/sonic-2",
    }
    assert pool.session_options(pool.get("support")) == {
        "stt": "deepgram/nova-3",
        "llm": "openai/gpt-4o",
        "tts": "cartesia/sonic-2",
        "max_tool_steps": 5,
    }


async def test_turn_kwargs_reach_a_prewarmed_session(devserver: DispatchServer) -> None:
    recorder = SessionRecorder()
    pool = AgentPool(
        default_stt=FakeSTT(), default_llm=FakeLLM(), default_tts=FakeTTS(), observers=[recorder]
    )
    pool.add("sales", SalesAgent, session_kwargs={"min_endpointing_delay": 0.9})
    await call_each_agent(pool, devserver)
    assert recorder.sessions["sales"].options.endpointing["min_delay"] == 0.9


async def test_turn_handling_in_session_kwargs_keeps_the_shared_turn_detector(
    devserver: DispatchServer,
) -> None:
    recorder = SessionRecorder()
    pool = AgentPool(
        default_stt=FakeSTT(), default_llm=FakeLLM(), default_tts=FakeTTS(), observers=[recorder]
    )
    endpointing = {"turn_handling": {"endpointing": {"min_delay": 0.9}}}
    pool.add("sales", SalesAgent, session_kwargs=endpointing)
    await call_each_agent(pool, devserver)
    session = recorder.sessions["sales"]
    assert session.options.endpointing["min_delay"] == 0.9
    assert session.turn_detection is models.shared_turn_detector()


class HttpSessionAgent(Agent):
    """Asks for livekit's per-job http session, as every hosted provider plugin does."""

    seen: list[str] = []

    def __init__(self) -> None:
        super().__init__(instructions="You are Http.")

    async def on_enter(self) -> None:
        try:
            http_context.http_session()
        except RuntimeError as e:
            HttpSessionAgent.seen.append(f"no http session: {e}")
        else:
            HttpSessionAgent.seen.append("ok")


async def test_a_coroutine_call_has_the_http_session_provider_plugins_use(
    devserver: DispatchServer,
) -> None:
    HttpSessionAgent.seen.clear()
    pool = AgentPool(
        agents={"http": HttpSessionAgent},
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    await call_each_agent(pool, devserver)
    assert HttpSessionAgent.seen == ["ok"]


async def test_an_audio_call_hears_the_caller_at_the_rate_the_pool_asks_the_room_for(
    devserver: DispatchServer,
) -> None:
    """A phone line's 8 kHz: the simulated microphone sends what a room would at the
    pool's rate, in livekit's 50 ms frames, and the shared VAD and turn model still hear
    every turn (they resample to their 16 kHz)."""
    stt = FakeSTT()
    pool = AgentPool(
        default_stt=stt,
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(audio_input_rate=8000)),
    )
    pool.add("sales", SalesAgent)
    turns = ["I would like to book a table", "thank you, goodbye"]
    async with running(pool, devserver):
        job = await devserver.dispatch(
            metadata={"agent": "sales"},
            simulated_call={"turns": turns, "mode": "audio", "pause_s": 0.1},
        )
        done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=60)
        assert done.state.value == "success", done.to_dict()
    transcript = pool.transcripts[job.id]
    assert transcript.replies == [f"You are Sales. | you said: {t}" for t in turns]
    assert transcript.speech_detected >= len(turns)
    assert stt.sample_rates == {8000}, "the caller's audio reached the STT at 8 kHz"


async def test_a_room_call_asks_the_room_for_audio_at_the_pools_rate() -> None:
    """Over a room, livekit's RoomIO converts the track to the rate the session asks for;
    the pool asks for its `audio_input_rate` (16 kHz unless set)."""
    from livekit.agents import AgentSession
    from livekit.agents.voice.events import CloseEvent, CloseReason

    from openrtc.worker import call as call_mod

    asked: list[Any] = []

    class RecordingSession(AgentSession):  # type: ignore[type-arg]
        async def start(self, agent: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            asked.append(kwargs.get("room_options"))
            self.emit("close", CloseEvent(error=None, reason=CloseReason.USER_INITIATED))

    class Ctx:
        room = object()
        shutdowns: list[str] = []

        async def connect(self) -> None:
            return None

        def shutdown(self, reason: str) -> None:
            self.shutdowns.append(reason)

    for runtime, rate in ((Runtime(), 16000), (Runtime(audio_input_rate=24000), 24000)):
        pool = AgentPool(config=PoolConfig.from_env(runtime=runtime))
        pool.add("sales", SalesAgent)
        spec = pool.registry.get("sales")
        ctx = Ctx()
        await call_mod._over_room(pool, ctx, RecordingSession(), SalesAgent(), spec, [])  # type: ignore[arg-type]
        options = asked.pop()
        assert options.audio_input.sample_rate == rate
        assert options.audio_input.frame_size_ms == 50
        assert ctx.shutdowns
