"""Simulated media for an `AgentSession` with no room: a caller's microphone and earpiece.

`SimulatedAudioInput` streams PCM frames at real-time pace, silence between turns and a
recorded speech clip for each turn, so the real VAD and end-of-turn model hear a caller
as they would over a room; a simulated call's microphone runs at the rate the pool asks
the room for (`--audio-input-rate`), in the frame size its script says (20 ms unless
set; a room delivers 50 ms).
`SimulatedAudioOutput` plays the agent's TTS audio at real-time pace and reports each
segment's playback as finished or interrupted, which is what the session's turn-taking
waits on.

The speech clips in `assets/` were spoken by espeak-ng (voice en-us, 160 wpm) and
converted with sox to 16 kHz mono 16-bit WAV, leading and trailing silence trimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import wave
from collections import deque
from dataclasses import dataclass
from importlib import resources

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from .script import DEFAULT_FRAME_MS

CLIP_SAMPLE_RATE = 16000
"""Sample rate of the bundled clips (what Silero uses)."""

LATE_FRAME_S = 0.2
"""A frame sent later than this after its real-time slot counts as late."""


class MicTotals:
    """Every simulated microphone in this process: frames sent, sent late, never sent.

    A loop too busy to pull audio in real time shows up here first (see ops.call_stats).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {"frames_sent": 0, "frames_late": 0, "frames_skipped": 0}

    def add(self, *, sent: int = 0, late: int = 0, skipped: int = 0) -> None:
        with self._lock:
            self._counts["frames_sent"] += sent
            self._counts["frames_late"] += late
            self._counts["frames_skipped"] += skipped

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


MIC_TOTALS = MicTotals()


@dataclass(frozen=True)
class SpeechClip:
    """A short recorded utterance, as 16-bit mono samples."""

    name: str
    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def at_rate(self, rate: int) -> np.ndarray:
        """The clip's samples at `rate` (resampled once per rate, then kept)."""
        if rate == self.sample_rate:
            return self.samples
        key = (self.name, self.sample_rate, rate)
        with _resampled_lock:
            found = _resampled.get(key)
        if found is None:
            found = _resample(self.samples, self.sample_rate, rate)
            with _resampled_lock:
                _resampled[key] = found
        return found


_resampled: dict[tuple[str, int, int], np.ndarray] = {}
_resampled_lock = threading.Lock()


def _resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    resampler = rtc.AudioResampler(
        input_rate=from_rate, output_rate=to_rate, quality=rtc.AudioResamplerQuality.HIGH
    )
    frame = rtc.AudioFrame(samples.tobytes(), from_rate, 1, len(samples))
    out = [*resampler.push(frame), *resampler.flush()]
    if not out:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]).copy()


def _read_wav(name: str, data: bytes) -> SpeechClip:
    import io as _bytes_io

    with wave.open(_bytes_io.BytesIO(data)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"speech clip {name} must be mono 16-bit PCM WAV.")
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()
    return SpeechClip(name=name, samples=samples, sample_rate=rate)


@functools.cache
def speech_clips() -> tuple[SpeechClip, ...]:
    """The bundled speech clips, in a stable order; audio turns cycle through them."""
    folder = resources.files("openrtc.simulation") / "assets"
    clips = [
        _read_wav(entry.name, entry.read_bytes())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".wav")
    ]
    if not clips:
        raise RuntimeError(
            "openrtc.simulation has no speech clips in its assets folder; reinstall openrtc."
        )
    return tuple(clips)


class InputClosed(RuntimeError):
    """The simulated microphone was closed before an utterance finished playing."""


@dataclass
class _Utterance:
    samples: np.ndarray
    done: asyncio.Future[None]
    cursor: int = 0


def line_noise(dbfs: float, sample_rate: int, seed: int | None = None) -> np.ndarray:
    """One second of white noise at `dbfs` RMS (0 dBFS: a full-scale sine's RMS), int16:
    the floor a real line carries where the benchmark would otherwise send zeros."""
    rms = 32767 / np.sqrt(2) * 10 ** (dbfs / 20)
    noise = np.random.default_rng(seed).standard_normal(sample_rate) * rms
    floor: np.ndarray = np.clip(np.round(noise), -32768, 32767).astype(np.int16)
    return floor


class SimulatedAudioInput(io.AudioInput):
    """A caller's microphone: frames at real-time pace, silence unless speaking.

    A frame is handed over when its audio has been spoken, as a room delivers it: the
    frame due at time t holds the audio of the slot that ends at t. Pacing follows a
    monotonic schedule, so sleep overshoot does not accumulate; after a loop stall longer
    than `max_lag` the schedule restarts instead of bursting to catch up.
    """

    def __init__(
        self,
        *,
        sample_rate: int = CLIP_SAMPLE_RATE,
        frame_ms: int = DEFAULT_FRAME_MS,
        noise_dbfs: float | None = None,
        max_lag: float = 0.5,
        label: str = "openrtc.SimulatedAudioInput",
    ) -> None:
        super().__init__(label=label)
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self._frame_s = self.frame_samples / sample_rate
        self._max_lag = max_lag
        self._silence = bytes(self.frame_samples * 2)
        floor = None if noise_dbfs is None else line_noise(noise_dbfs, sample_rate)
        self._noise = None if floor is None else np.concatenate([floor, floor]).astype(np.int32)
        """A second of a steady noise floor twice over, so any frame of it is one slice;
        looped under everything sent (None: digital silence)."""
        self._noise_at = 0
        self._queue: deque[_Utterance] = deque()
        self._next_at: float | None = None
        self._closed = False
        self.frames_sent = 0
        self.speech_frames_sent = 0
        self.speech_ended_at: float | None = None
        """Loop time (monotonic) at which the last finished utterance ended: the real-time
        end of its last frame on this microphone's schedule."""

    @property
    def closed(self) -> bool:
        return self._closed

    async def speak(self, samples: np.ndarray) -> None:
        """Play `samples` (16-bit, at this input's rate) and return once all were sent."""
        if self._closed:
            raise InputClosed("the simulated microphone is closed; the caller has hung up.")
        utterance = _Utterance(
            samples=np.asarray(samples, dtype=np.int16),
            done=asyncio.get_running_loop().create_future(),
        )
        self._queue.append(utterance)
        await asyncio.shield(utterance.done)

    def close(self) -> None:
        """Hang up the microphone: the session's audio stream ends after this."""
        self._closed = True
        while self._queue:
            done = self._queue.popleft().done
            if not done.done():
                done.set_exception(InputClosed("the simulated microphone closed mid-utterance."))
                done.exception()  # retrieved here so an unawaited one is not reported

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        now = loop.time()
        skipped = 0
        if self._next_at is None or now - self._next_at > self._max_lag:
            if self._next_at is not None:
                skipped = int((now - self._next_at) / self._frame_s)
            self._next_at = now
        elif self._next_at > now:
            await asyncio.sleep(self._next_at - now)
            if self._closed:
                raise StopAsyncIteration
        late = loop.time() - self._next_at > LATE_FRAME_S
        ends_at = self._next_at
        self._next_at += self._frame_s
        self.frames_sent += 1
        MIC_TOTALS.add(sent=1, late=int(late), skipped=skipped)
        return rtc.AudioFrame(
            data=self._next_chunk(ends_at=ends_at),
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=self.frame_samples,
        )

    def _next_chunk(self, ends_at: float) -> bytes:
        """The next frame's samples; `ends_at` is when that frame's audio ends in real time."""
        data = self._next_speech(ends_at)
        if self._noise is None:
            return data
        n, at = self.frame_samples, self._noise_at
        self._noise_at = (at + n) % (len(self._noise) // 2)
        mixed = np.frombuffer(data, dtype=np.int16) + self._noise[at : at + n]
        return bytes(np.clip(mixed, -32768, 32767).astype(np.int16).tobytes())

    def _next_speech(self, ends_at: float) -> bytes:
        if not self._queue:
            return self._silence
        utterance = self._queue[0]
        end = utterance.cursor + self.frame_samples
        chunk = utterance.samples[utterance.cursor : end]
        utterance.cursor = end
        if end >= len(utterance.samples):
            self._queue.popleft()
            self.speech_ended_at = ends_at
            if not utterance.done.done():
                utterance.done.set_result(None)
        self.speech_frames_sent += 1
        data = chunk.tobytes()
        return data + self._silence[len(data) :]


@dataclass(frozen=True)
class _SegmentEnd:
    interrupted: bool


class SimulatedAudioOutput(io.AudioOutput):
    """A caller's earpiece: plays the agent's audio at real-time pace, then reports it.

    Each flushed segment ends with exactly one `on_playback_finished`: not interrupted
    with its full duration once played, or interrupted at the position reached when
    `clear_buffer()` cut it. `pause()`/`resume()` stop and restart the playback clock.
    """

    def __init__(self, *, label: str = "openrtc.SimulatedAudioOutput") -> None:
        super().__init__(
            label=label,
            capabilities=io.AudioOutputCapabilities(pause=True),
            next_in_chain=None,
            sample_rate=None,
        )
        self._items: deque[rtc.AudioFrame | _SegmentEnd] = deque()
        self._has_items = asyncio.Event()
        self._control = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._capturing = False
        self._drop_until_flush = False
        self._cut = False
        self._position = 0.0
        self._segment_started = False
        self._task: asyncio.Task[None] | None = None
        self.played_seconds = 0.0
        self.segments_played = 0
        self.segments_interrupted = 0
        self._heard_at: deque[float] = deque(maxlen=32)

    def first_heard_after(self, t: float) -> float | None:
        """Loop time the first segment that started playing after `t` did so, if any.

        A segment starts playing with its first frame of audio: the moment the caller
        begins to hear that reply (recent segments only).
        """
        return next((at for at in self._heard_at if at > t), None)

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._capturing = True
        if self._drop_until_flush:
            return
        self._items.append(frame)
        self._has_items.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._play(), name="openrtc.simulated_playback")

    def flush(self) -> None:
        super().flush()
        if not self._capturing:
            return
        self._capturing = False
        self._items.append(_SegmentEnd(interrupted=self._drop_until_flush))
        self._drop_until_flush = False
        self._has_items.set()

    def clear_buffer(self) -> None:
        if self._pending_playback_count <= 0:
            return
        self._items = deque(
            _SegmentEnd(interrupted=True) for item in self._items if isinstance(item, _SegmentEnd)
        )
        self._drop_until_flush = self._capturing
        self._cut = True
        self._control.set()

    def pause(self) -> None:
        super().pause()
        self._resumed.clear()
        self._control.set()

    def resume(self) -> None:
        super().resume()
        self._resumed.set()
        self._control.set()

    def on_detached(self) -> None:
        super().on_detached()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._items.clear()
        self._capturing = False
        self._drop_until_flush = False
        for _ in range(self._pending_playback_count):
            self._finish_segment(interrupted=True)

    async def aclose(self) -> None:
        """Stop the playback clock; used when the sink is discarded without detaching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _finish_segment(self, *, interrupted: bool) -> None:
        position = self._position
        self._position = 0.0
        self._segment_started = False
        self._cut = False
        if interrupted:
            self.segments_interrupted += 1
        else:
            self.segments_played += 1
        self.on_playback_finished(playback_position=position, interrupted=interrupted)

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._has_items.clear()
                await self._has_items.wait()
            item = self._items.popleft()
            if isinstance(item, _SegmentEnd):
                self._finish_segment(interrupted=item.interrupted)
                continue
            if not self._segment_started:
                self._segment_started = True
                self._heard_at.append(loop.time())
                self.on_playback_started(created_at=time.time())
            remaining = item.duration
            while remaining > 0 and not self._cut:
                self._control.clear()
                if not self._resumed.is_set():
                    await self._control.wait()
                    continue
                started = loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._control.wait(), remaining)
                elapsed = min(loop.time() - started, remaining)
                remaining -= elapsed
                self._position += elapsed
                self.played_seconds += elapsed
