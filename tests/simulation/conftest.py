"""Fixtures for simulated calls: shared fake providers and the real voice models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from livekit.agents import AgentSession

from openrtc.testing import FakeLLM, FakeSTT, FakeTTS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs real-time audio through the voice models")


@dataclass(frozen=True)
class VoiceModels:
    vad: Any
    turn_detector: Any


@pytest.fixture(scope="session")
def voice_models() -> VoiceModels:
    """The real Silero VAD and local end-of-turn model, loaded once and shared."""
    from livekit.agents import inference
    from livekit.local_inference import init_eot
    from livekit.plugins import silero

    init_eot()
    return VoiceModels(silero.VAD.load(), inference.TurnDetector(version="v1-mini"))


@dataclass
class Providers:
    llm: FakeLLM
    stt: FakeSTT
    tts: FakeTTS


@pytest.fixture
def providers() -> Providers:
    """One set of fake providers, shared by every session a test builds (as in a worker)."""
    return Providers(FakeLLM(), FakeSTT(), FakeTTS(seconds_per_char=0.02))


SessionFactory = Callable[[], AgentSession[Any]]


@pytest.fixture
async def make_session(
    providers: Providers, voice_models: VoiceModels
) -> AsyncIterator[SessionFactory]:
    """Build sessions on the shared providers and models; all are closed after the test."""
    sessions: list[AgentSession[Any]] = []

    def make() -> AgentSession[Any]:
        session: AgentSession[Any] = AgentSession(
            llm=providers.llm,
            stt=providers.stt,
            tts=providers.tts,
            vad=voice_models.vad,
            turn_handling={"turn_detection": voice_models.turn_detector},
            session_close_transcript_timeout=0.1,
        )
        sessions.append(session)
        return session

    yield make
    await asyncio.gather(*(session.aclose() for session in sessions))
