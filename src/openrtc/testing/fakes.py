"""Deterministic stand-ins for the STT, LLM and TTS providers of an `AgentSession`.

They let tests, dev mode, deploy rehearsals and benchmarks run real sessions with no
provider keys and no network, while every answer still proves which agent gave it and
which caller it answered. One instance of each may be shared by many concurrent calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections import deque
from collections.abc import Iterator
from typing import Any, Never

import numpy as np
from livekit.agents import APIConnectionError, llm, stt, tts, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.utils.audio import calculate_audio_duration

DEFAULT_FAIL_TRIGGER = "[fail]"
"""User text containing this makes `FakeLLM` fail the reply (see `FakeLLM`)."""

NO_USER_INPUT = "(no user input)"
"""What `FakeLLM` puts in place of the user's words when the chat has no user message."""

# ---------------------------------------------------------------------------
# Per-call speech: how a shared FakeSTT knows what the caller of THIS call said.
# ---------------------------------------------------------------------------


class CallerSpeech:
    """What one simulated caller has said and the STT has not transcribed yet.

    The simulated caller queues a turn's text just before it plays that turn's audio;
    the STT claims texts in order when the VAD hands it a finished utterance. A VAD
    that splits one utterance in two gets the text once and an empty transcript after,
    which the session ignores, so a turn is never heard twice.
    """

    def __init__(self) -> None:
        self._pending: deque[str] = deque()
        self.claimed: list[str] = []

    def expect(self, text: str) -> None:
        """Queue the text of the utterance the caller is about to speak."""
        self._pending.append(text)

    def claim(self) -> str:
        """Take the oldest untranscribed utterance, or "" when none is waiting."""
        if not self._pending:
            return ""
        text = self._pending.popleft()
        self.claimed.append(text)
        return text

    @property
    def pending(self) -> int:
        return len(self._pending)


_CALLER_SPEECH: contextvars.ContextVar[CallerSpeech | None] = contextvars.ContextVar(
    "openrtc_caller_speech", default=None
)


def current_caller_speech() -> CallerSpeech | None:
    """The caller speech bound to the running task's context, if any."""
    return _CALLER_SPEECH.get()


@contextlib.contextmanager
def bind_caller_speech(speech: CallerSpeech) -> Iterator[CallerSpeech]:
    """Bind `speech` to the current context for the duration of the block.

    Every task the session creates inside the block (its STT stream among them) copies
    the context, so the shared `FakeSTT` transcribes that session's audio with this
    caller's words even while other calls run on the same loop.
    """
    token = _CALLER_SPEECH.set(speech)
    try:
        yield speech
    finally:
        _CALLER_SPEECH.reset(token)


def untracked_transcript(duration: float) -> str:
    """The transcript `FakeSTT` gives audio heard outside any simulated call."""
    return f"fake transcript of {duration:.1f} seconds of audio"


# ---------------------------------------------------------------------------
# STT
# ---------------------------------------------------------------------------


class FakeSTT(stt.STT[Never]):
    """A non-streaming STT: the session wraps it in its VAD-driven `StreamAdapter`.

    Inside a simulated call it returns the caller's next queued turn text (see
    `CallerSpeech`); elsewhere it returns `untracked_transcript(<audio seconds>)`.
    """

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}.")
        self.latency = latency
        self.recognitions = 0
        self.sample_rates: set[int] = set()
        """The sample rates of the audio it was asked to recognize."""

    @property
    def model(self) -> str:
        return "fake-stt"

    @property
    def provider(self) -> str:
        return "openrtc"

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        if self.latency:
            await asyncio.sleep(self.latency)
        self.recognitions += 1
        frames = buffer if isinstance(buffer, list) else [buffer]
        self.sample_rates.update(f.sample_rate for f in frames)
        speech = current_caller_speech()
        duration = calculate_audio_duration(buffer)
        text = speech.claim() if speech is not None else untracked_transcript(duration)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid("fake_stt_"),
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(language if isinstance(language, str) else "en"),
                    text=text,
                    start_time=0.0,
                    end_time=duration,
                    confidence=1.0,
                )
            ],
        )


# ---------------------------------------------------------------------------
# LLM
# ---------------------------------------------------------------------------


def _instructions_line(chat_ctx: llm.ChatContext) -> str:
    for item in chat_ctx.items:
        if isinstance(item, llm.ChatMessage) and item.role in ("system", "developer"):
            for line in (item.text_content or "").splitlines():
                if line.strip():
                    return line.strip()
    return "(no instructions)"


def _last_user_text(chat_ctx: llm.ChatContext) -> str | None:
    for item in reversed(chat_ctx.items):
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            return (item.text_content or "").strip()
    return None


def fake_reply(chat_ctx: llm.ChatContext) -> str:
    """The reply `FakeLLM` gives for a chat: who answers, and what it heard.

    `"<first line of the agent's instructions> | you said: <last user message>"`, or
    `"<first line> | you said: (no user input)"` when the chat has no user message.
    """
    user = _last_user_text(chat_ctx)
    return f"{_instructions_line(chat_ctx)} | you said: {user or NO_USER_INPUT}"


def _chunks(text: str, count: int) -> list[str]:
    words = text.split(" ")
    size = max(1, -(-len(words) // count))
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


class FakeLLM(llm.LLM[Never]):
    """An LLM whose reply names the answering agent and echoes the caller (`fake_reply`).

    The reply is streamed in `chunks` pieces after `latency` seconds. When the last user
    message contains `fail_trigger` (default "[fail]"; None disables it) the stream
    raises a non-retryable `APIConnectionError`, which the session treats as a failed
    reply, as it would a provider outage.
    """

    def __init__(
        self,
        latency: float = 0.0,
        *,
        chunks: int = 3,
        fail_trigger: str | None = DEFAULT_FAIL_TRIGGER,
    ) -> None:
        super().__init__()
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}.")
        if chunks < 1:
            raise ValueError(f"chunks must be at least 1, got {chunks}.")
        self.latency = latency
        self.chunks = chunks
        self.fail_trigger = fail_trigger
        self.requests = 0

    @property
    def model(self) -> str:
        return "fake-llm"

    @property
    def provider(self) -> str:
        return "openrtc"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> FakeLLMStream:
        self.requests += 1
        return FakeLLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class FakeLLMStream(llm.LLMStream):
    """One `FakeLLM` reply, streamed as chat chunks."""

    def __init__(
        self,
        fake: FakeLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(fake, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._fake = fake

    async def _run(self) -> None:
        fake = self._fake
        if fake.latency:
            await asyncio.sleep(fake.latency)
        user = _last_user_text(self._chat_ctx) or ""
        if fake.fail_trigger and fake.fail_trigger in user:
            raise APIConnectionError(
                f"the fake LLM failed on purpose: the user text contains {fake.fail_trigger!r}",
                retryable=False,
            )
        request_id = utils.shortuuid("fake_llm_")
        reply = fake_reply(self._chat_ctx)
        for piece in _chunks(reply, fake.chunks):
            self._event_ch.send_nowait(
                llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=piece))
            )
            await asyncio.sleep(0)
        prompt_tokens = sum(
            len((m.text_content or "").split())
            for m in self._chat_ctx.items
            if isinstance(m, llm.ChatMessage)
        )
        completion_tokens = len(reply.split())
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=completion_tokens,
                    prompt_tokens=prompt_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                ),
            )
        )


# ---------------------------------------------------------------------------
# TTS
# ---------------------------------------------------------------------------


class FakeTTS(tts.TTS[Never]):
    """A non-streaming TTS that renders text as a quiet tone of a predictable length.

    Each character lasts `seconds_per_char` (default 60 ms), capped at `max_seconds`
    per synthesis, so a reply plays for about as long as a person would take to say it.
    The session wraps it in its sentence-splitting `StreamAdapter`.
    """

    def __init__(
        self,
        latency: float = 0.0,
        sample_rate: int = 24000,
        *,
        seconds_per_char: float = 0.06,
        max_seconds: float = 10.0,
        tone_hz: float = 220.0,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}.")
        if seconds_per_char <= 0 or max_seconds <= 0:
            raise ValueError("seconds_per_char and max_seconds must both be positive.")
        self.latency = latency
        self.seconds_per_char = seconds_per_char
        self.max_seconds = max_seconds
        self.tone_hz = tone_hz
        self.syntheses = 0

    @property
    def model(self) -> str:
        return "fake-tts"

    @property
    def provider(self) -> str:
        return "openrtc"

    def duration_for(self, text: str) -> float:
        """Seconds of audio this TTS produces for `text`."""
        return min(len(text.strip()) * self.seconds_per_char, self.max_seconds)

    def pcm_for(self, text: str) -> bytes:
        """The 16-bit mono PCM this TTS produces for `text` (deterministic): the start of
        one tone computed once per process, so a reply costs a copy, not a synthesis."""
        samples = round(self.duration_for(text) * self.sample_rate)
        return _tone(self.sample_rate, self.tone_hz, self.max_seconds)[: 2 * samples]

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> FakeChunkedStream:
        self.syntheses += 1
        return FakeChunkedStream(tts=self, input_text=text, conn_options=conn_options)


@functools.lru_cache(maxsize=8)
def _tone(sample_rate: int, tone_hz: float, seconds: float) -> bytes:
    t = np.arange(round(seconds * sample_rate), dtype=np.float64) / sample_rate
    return (600.0 * np.sin(2.0 * np.pi * tone_hz * t)).astype(np.int16).tobytes()


class FakeChunkedStream(tts.ChunkedStream):
    """One `FakeTTS` synthesis."""

    def __init__(self, *, tts: FakeTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._fake = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        fake = self._fake
        output_emitter.initialize(
            request_id=utils.shortuuid("fake_tts_"),
            sample_rate=fake.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        if fake.latency:
            await asyncio.sleep(fake.latency)
        pcm = fake.pcm_for(self.input_text)
        step = fake.sample_rate // 10 * 2  # 100 ms of 16-bit samples per push
        for i in range(0, len(pcm), step):
            output_emitter.push(pcm[i : i + step])
        output_emitter.flush()
