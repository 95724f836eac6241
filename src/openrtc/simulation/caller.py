"""A synthetic caller that talks to a real `AgentSession` with no room and hangs up.

The session is real (its LLM, TTS, VAD, turn detector and STT all run); only the far end
of the call is simulated. The caller never closes the session: it returns a
`CallTranscript` and leaves closing the session and ending the job to its runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice.events import (
    CloseEvent,
    CloseReason,
    SpeechCreatedEvent,
    UserStateChangedEvent,
)
from livekit.agents.voice.room_io import AudioInputOptions
from livekit.agents.voice.speech_handle import SpeechHandle

from ..testing.fakes import CallerSpeech, bind_caller_speech
from .latency import TURN_LATENCY
from .media import SimulatedAudioInput, SimulatedAudioOutput, speech_clips
from .script import CallMode, CallScript

DEFAULT_TURN_TIMEOUT = 30.0
"""Seconds the caller waits for the agent to answer one turn before giving up."""

_T = TypeVar("_T")


@dataclass
class CallTranscript:
    """What happened on one simulated call.

    turns holds what the caller actually said and replies what the agent answered, one
    per turn. completed is True when every turn got a reply and the session did not fail;
    otherwise error says, in one sentence, what went wrong. speech_detected counts how
    often the session heard the caller start speaking (audio mode only).
    turn_latency_ms (audio mode only) holds, per answered turn, the milliseconds from the
    end of the caller's speech to the first frame of the agent's reply audio playing in
    the caller's earpiece (None when the reply had no audio); see `simulation.latency`.
    """

    call_id: str
    mode: CallMode
    started_at: float
    ended_at: float = 0.0
    turns: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    greeting: str | None = None
    completed: bool = False
    error: str | None = None
    speech_detected: int = 0
    turn_latency_ms: list[float | None] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "mode": self.mode,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": round(self.duration_s, 3),
            "turns": list(self.turns),
            "replies": list(self.replies),
            "greeting": self.greeting,
            "completed": self.completed,
            "error": self.error,
            "speech_detected": self.speech_detected,
            "turn_latency_ms": list(self.turn_latency_ms),
        }


class CallAborted(Exception):
    """The simulated call cannot go on; the message is the transcript's error."""


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _speech_text(handles: list[SpeechHandle]) -> str:
    parts: list[str] = []
    for handle in handles:
        for item in handle.chat_items:
            if isinstance(item, llm.ChatMessage) and item.role == "assistant":
                text = (item.text_content or "").strip()
                if text:
                    parts.append(text)
    return " ".join(parts)


class _SessionWatch:
    """Follows one session's events for the caller: speeches, closing, user speech."""

    def __init__(self, session: AgentSession[Any]) -> None:
        self._session = session
        self.speeches: list[SpeechHandle] = []
        self._new_speech = asyncio.Event()
        self.closed: asyncio.Future[CloseEvent] = asyncio.get_running_loop().create_future()
        self.speech_detected = 0
        session.on("speech_created", self._on_speech)
        session.on("close", self._on_close)
        session.on("user_state_changed", self._on_user_state)

    def detach(self) -> None:
        self._session.off("speech_created", self._on_speech)
        self._session.off("close", self._on_close)
        self._session.off("user_state_changed", self._on_user_state)

    def _on_speech(self, ev: SpeechCreatedEvent) -> None:
        self.speeches.append(ev.speech_handle)
        self._new_speech.set()

    def _on_close(self, ev: CloseEvent) -> None:
        if not self.closed.done():
            self.closed.set_result(ev)

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "speaking":
            self.speech_detected += 1

    async def speech_after(self, index: int) -> SpeechHandle:
        """The first speech created after the first `index` ones."""
        while len(self.speeches) <= index:
            self._new_speech.clear()
            await self._new_speech.wait()
        return self.speeches[index]

    def close_reason(self) -> str:
        ev = self.closed.result()
        if ev.error is not None:
            return f"the session closed with an error ({_describe(ev.error.error)})"
        return f"the session closed ({ev.reason.value})"


class _Caller:
    def __init__(
        self,
        session: AgentSession[Any],
        script: CallScript,
        transcript: CallTranscript,
        turn_timeout: float,
        input_options: AudioInputOptions | None = None,
    ) -> None:
        self.session = session
        self.input_options = input_options or AudioInputOptions()
        self.script = script
        self.transcript = transcript
        self.turn_timeout = turn_timeout
        self.watch = _SessionWatch(session)
        self.speech = CallerSpeech()
        self.mic: SimulatedAudioInput | None = None
        self.earpiece: SimulatedAudioOutput | None = None

    async def wait(self, aw: Awaitable[_T], what: str, timeout: float | None = None) -> _T:
        """Await `aw` unless the session closes or `timeout` passes first."""
        task = asyncio.ensure_future(aw)
        try:
            waiters: set[asyncio.Future[Any]] = {task, self.watch.closed}
            done, _ = await asyncio.wait(
                waiters,
                timeout=self.turn_timeout if timeout is None else timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task in done:
            if task.exception() is not None and self.watch.closed.done():
                raise CallAborted(f"{self.watch.close_reason()} while waiting for {what}")
            return task.result()
        if self.watch.closed.done():
            raise CallAborted(f"{self.watch.close_reason()} while waiting for {what}")
        limit = self.turn_timeout if timeout is None else timeout
        raise CallAborted(f"timed out after {limit:g} s waiting for {what}")

    async def start(self, agent: Agent) -> None:
        if self.script.mode == "audio":
            if self.session.stt is None:
                raise CallAborted(
                    "an audio-mode call needs a session with an STT; pass AgentSession(stt=...) "
                    "or use mode 'text'"
                )
            self.mic = SimulatedAudioInput(
                sample_rate=self.input_options.sample_rate,
                frame_ms=self.script.frame_ms,
                noise_dbfs=self.script.noise_dbfs,
            )
            self.earpiece = SimulatedAudioOutput()
            self.session.input.audio = self.mic
            self.session.output.audio = self.earpiece
        # awaited in this task, as an entrypoint would, so the session's tracing context
        # and every task it spawns belong to this call
        try:
            async with asyncio.timeout(self.turn_timeout):
                await self.session.start(agent, record=False)
        except TimeoutError:
            raise CallAborted(f"the session did not start within {self.turn_timeout:g} s") from None

    async def await_speech(self, handle: SpeechHandle, what: str) -> str:
        await self.wait(handle.wait_for_playout(), what)
        if (err := handle.exception()) is not None:
            raise CallAborted(f"the agent failed on {what}: {_describe(err)}")
        if handle.interrupted:
            await asyncio.sleep(0)
            if self.watch.closed.done():
                raise CallAborted(f"{self.watch.close_reason()} during {what}")
            raise CallAborted(f"{what} was interrupted before it finished")
        return _speech_text([handle])

    async def greet(self, greeting: str | None) -> None:
        if greeting:
            handle = self.session.say(greeting)
            self.transcript.greeting = await self.await_speech(handle, "the greeting")
        elif self.script.expect_greeting:
            handle = await self.wait(self.watch.speech_after(0), "a greeting from the agent")
            self.transcript.greeting = await self.await_speech(handle, "the greeting")

    async def turn(self, index: int, text: str) -> str:
        what = f"a reply to turn {index + 1} ({text!r})"
        if self.script.mode == "text":
            try:
                handle = self.session.generate_reply(user_input=text)
            except RuntimeError as e:
                raise CallAborted(f"the session could not take turn {index + 1}: {e}") from e
            self.transcript.turns.append(text)
            return await self.await_speech(handle, what)
        assert self.mic is not None
        await self.wait(self.session.wait_for_idle(), "the agent to finish speaking")
        clips = speech_clips()
        clip = clips[index % len(clips)]
        mark = len(self.watch.speeches)
        self.speech.expect(text)
        self.transcript.turns.append(text)
        speech = clip.at_rate(self.mic.sample_rate)
        await self.wait(self.mic.speak(speech), f"turn {index + 1} to be spoken")
        spoken_at = self.mic.speech_ended_at
        first = await self.wait(self.watch.speech_after(mark), what)
        await self.await_speech(first, what)
        self.record_latency(spoken_at)
        await self.wait(self.session.wait_for_idle(), what)
        handles = self.watch.speeches[mark:]
        for handle in handles:
            await self.await_speech(handle, what)
        return _speech_text(handles)

    def record_latency(self, spoken_at: float | None) -> None:
        """The turn's latency: end of the caller's speech -> its reply starting to play."""
        assert self.earpiece is not None
        heard = None if spoken_at is None else self.earpiece.first_heard_after(spoken_at)
        if spoken_at is None or heard is None:
            self.transcript.turn_latency_ms.append(None)
            return
        ms = round(1000 * (heard - spoken_at), 1)
        self.transcript.turn_latency_ms.append(ms)
        TURN_LATENCY.add(ms)

    async def converse(self, agent: Agent, greeting: str | None) -> None:
        await self.start(agent)
        await self.greet(greeting)
        for index, text in enumerate(self.script.turns):
            await self.wait(
                asyncio.sleep(self.script.pause_s), "the caller's pause", self.script.pause_s + 1
            )
            self.transcript.replies.append(await self.turn(index, text))
        self.transcript.completed = True
        if self.script.hold_s > 0:
            with contextlib.suppress(CallAborted):
                await self.wait(
                    asyncio.sleep(self.script.hold_s), "the hold", timeout=self.script.hold_s + 1
                )
        if self.watch.closed.done() and self.watch.closed.result().reason == CloseReason.ERROR:
            self.transcript.completed = False
            self.transcript.error = self.watch.close_reason() + " while the caller held the line"


async def run_simulated_call(
    session: AgentSession[Any],
    agent: Agent,
    script: CallScript,
    *,
    call_id: str,
    greeting: str | None = None,
    turn_timeout: float = DEFAULT_TURN_TIMEOUT,
    input_options: AudioInputOptions | None = None,
) -> CallTranscript:
    """Start `session` with `agent` and no room, play `script` as the caller, hang up.

    The session is started here with simulated media (audio mode) or none (text mode),
    `greeting` is said first when given, then each turn waits for its reply, at most
    `turn_timeout` seconds. In audio mode the caller's microphone runs at the sample rate
    of `input_options` (what the pool asks a room for; livekit's default when None), in
    the script's frame size. A call that fails (an agent error, a timeout, the session
    closing, or `script.max_duration_s` passing before every turn was answered) returns
    with completed False and its error; the session is never closed here.
    """
    transcript = CallTranscript(call_id=call_id, mode=script.mode, started_at=time.time())
    caller = _Caller(session, script, transcript, turn_timeout, input_options)
    try:
        with bind_caller_speech(caller.speech):
            try:
                async with asyncio.timeout(script.max_duration_s) as deadline:
                    await caller.converse(agent, greeting)
            except TimeoutError:
                if not deadline.expired():
                    raise
                if not transcript.completed:
                    transcript.error = (
                        f"the call reached max_duration_s={script.max_duration_s:g} after "
                        f"{len(transcript.replies)} of {len(script.turns)} replies"
                    )
    except CallAborted as e:
        transcript.error = str(e)
        transcript.completed = False
    except Exception as e:
        transcript.error = f"the simulated call failed: {_describe(e)}"
        transcript.completed = False
    finally:
        if caller.mic is not None:
            caller.mic.close()
        caller.watch.detach()
        transcript.speech_detected = caller.watch.speech_detected
        transcript.ended_at = time.time()
    return transcript
