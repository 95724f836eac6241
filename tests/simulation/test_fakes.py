"""The fake providers: deterministic, attributable, and safe to share between calls."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, llm
from livekit.plugins import silero

from openrtc.simulation import speech_clips
from openrtc.testing import (
    CallerSpeech,
    FakeLLM,
    FakeSTT,
    FakeTTS,
    bind_caller_speech,
    untracked_transcript,
)


def _chat(instructions: str, *user: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content=instructions)
    for text in user:
        ctx.add_message(role="user", content=text)
        ctx.add_message(role="assistant", content="ok")
    return ctx


async def _collect(stream: llm.LLMStream) -> list[str]:
    async with stream:
        return [c.delta.content async for c in stream if c.delta and c.delta.content]


async def test_llm_reply_names_the_agent_and_echoes_the_last_user_text() -> None:
    fake = FakeLLM()
    pieces = await _collect(
        fake.chat(chat_ctx=_chat("You are Sales.\nSell things.", "first", "book a table"))
    )
    assert "".join(pieces) == "You are Sales. | you said: book a table"
    assert len(pieces) >= 2, "the reply is streamed in several chunks"
    other = await _collect(fake.chat(chat_ctx=_chat("You are Support.", "book a table")))
    assert "".join(other) == "You are Support. | you said: book a table"
    assert fake.requests == 2


async def test_llm_without_user_message_says_so() -> None:
    text = "".join(await _collect(FakeLLM().chat(chat_ctx=_chat("\n  You are Sales.  \n"))))
    assert text == "You are Sales. | you said: (no user input)"


async def test_llm_fails_on_the_trigger_and_only_then() -> None:
    with pytest.raises(APIConnectionError, match="failed on purpose") as info:
        await _collect(FakeLLM().chat(chat_ctx=_chat("You are Sales.", "please [fail] now")))
    assert info.value.retryable is False
    text = await _collect(
        FakeLLM(fail_trigger=None).chat(chat_ctx=_chat("You are Sales.", "[fail]"))
    )
    assert "".join(text).endswith("you said: [fail]")


async def test_llm_latency_holds_back_the_first_chunk() -> None:
    stream = FakeLLM(latency=30).chat(chat_ctx=_chat("You are Sales.", "hi"))
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stream.__anext__(), 0.2)
    finally:
        await stream.aclose()


def test_negative_latency_is_refused() -> None:
    for make in (FakeLLM, FakeSTT, FakeTTS):
        with pytest.raises(ValueError, match="latency must be >= 0"):
            make(latency=-1)


def _frame(seconds: float, rate: int = 16000) -> rtc.AudioFrame:
    n = int(seconds * rate)
    return rtc.AudioFrame(bytes(n * 2), rate, 1, n)


async def test_stt_outside_a_call_describes_the_audio() -> None:
    event = await FakeSTT().recognize(_frame(1.5))
    assert event.alternatives[0].text == untracked_transcript(1.5)
    assert "1.5 seconds" in event.alternatives[0].text


async def test_stt_gives_each_call_its_own_callers_words() -> None:
    fake = FakeSTT(latency=0.01)

    async def call(name: str) -> list[str]:
        speech = CallerSpeech()
        with bind_caller_speech(speech):
            heard = []
            for turn in range(3):
                speech.expect(f"{name} turn {turn}")
                await asyncio.sleep(0.001 * len(name))
                heard.append((await fake.recognize(_frame(0.5))).alternatives[0].text)
            heard.append((await fake.recognize(_frame(0.5))).alternatives[0].text)
            return heard

    results = await asyncio.gather(*(call(n) for n in ("alice", "bob", "carol")))
    for name, heard in zip(("alice", "bob", "carol"), results, strict=True):
        assert heard == [f"{name} turn 0", f"{name} turn 1", f"{name} turn 2", ""]
    assert fake.recognitions == 12


async def test_tts_duration_follows_text_length_and_is_capped() -> None:
    fake = FakeTTS(sample_rate=24000, max_seconds=1.0)
    async with fake.synthesize("abcdefghij") as stream:
        frame = await stream.collect()
    assert frame.sample_rate == 24000 and frame.num_channels == 1
    assert frame.duration == pytest.approx(0.6, abs=0.011)
    samples = np.frombuffer(frame.data, dtype=np.int16)
    assert 0 < np.abs(samples).max() < 1000, "a quiet tone, not silence"
    async with fake.synthesize("x" * 100) as stream:
        capped = await stream.collect()
    assert capped.duration == pytest.approx(1.0, abs=0.011)
    assert fake.pcm_for("same text") == fake.pcm_for("same text")


async def test_tts_latency_holds_back_the_first_frame() -> None:
    stream = FakeTTS(latency=30).synthesize("hello")
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stream.__anext__(), 0.2)
    finally:
        await stream.aclose()


async def _speech_starts(vad: silero.VAD, samples: np.ndarray) -> int:
    stream = vad.stream()
    padded = np.concatenate([np.zeros(8000, np.int16), samples, np.zeros(16000, np.int16)])
    for i in range(0, len(padded) - 320 + 1, 320):
        stream.push_frame(rtc.AudioFrame(padded[i : i + 320].tobytes(), 16000, 1, 320))
    stream.end_input()
    starts = 0
    async for event in stream:
        starts += event.type.value == "start_of_speech"
    await stream.aclose()
    return starts


async def test_every_bundled_clip_makes_silero_hear_speech() -> None:
    vad = silero.VAD.load()
    clips = speech_clips()
    assert len(clips) >= 3
    assert await _speech_starts(vad, np.zeros(16000, np.int16)) == 0
    for clip in clips:
        assert clip.sample_rate == 16000
        assert 0.3 < clip.duration < 3.0
        assert await _speech_starts(vad, clip.samples) >= 1, clip.name
