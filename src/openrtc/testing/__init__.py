"""Deterministic fake providers for running real `AgentSession`s without keys or network."""

from .fakes import (
    DEFAULT_FAIL_TRIGGER,
    NO_USER_INPUT,
    CallerSpeech,
    FakeChunkedStream,
    FakeLLM,
    FakeLLMStream,
    FakeSTT,
    FakeTTS,
    bind_caller_speech,
    current_caller_speech,
    fake_reply,
    untracked_transcript,
)

__all__ = [
    "DEFAULT_FAIL_TRIGGER",
    "NO_USER_INPUT",
    "CallerSpeech",
    "FakeChunkedStream",
    "FakeLLM",
    "FakeLLMStream",
    "FakeSTT",
    "FakeTTS",
    "bind_caller_speech",
    "current_caller_speech",
    "fake_reply",
    "untracked_transcript",
]
