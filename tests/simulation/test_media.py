"""Simulated microphone and earpiece: real-time frames in, playback reports out."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.io import PlaybackFinishedEvent
from livekit.agents.voice.room_io import AudioInputOptions

from openrtc.simulation import (
    InputClosed,
    SimulatedAudioInput,
    SimulatedAudioOutput,
    speech_clips,
)
from openrtc.simulation.media import line_noise


async def record(mic: SimulatedAudioInput, frames: list[rtc.AudioFrame], count: int) -> None:
    """Take `count` frames from the microphone into `frames`, then hang it up."""
    async for frame in mic:
        frames.append(frame)
        if len(frames) == count:
            mic.close()


async def test_input_sends_silence_then_the_utterance_then_silence() -> None:
    mic = SimulatedAudioInput(sample_rate=16000, frame_ms=20)
    utterance = (np.arange(1, 1001) % 2000).astype(np.int16)  # 1000 samples: 3.1 frames
    frames: list[rtc.AudioFrame] = []
    listener = asyncio.create_task(record(mic, frames, 12))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(mic.speak(utterance), 5)
    spoken_at = len(frames)
    await asyncio.wait_for(listener, 5)

    assert all(f.sample_rate == 16000 and f.samples_per_channel == 320 for f in frames)
    audio = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    start = int(np.flatnonzero(audio)[0])
    assert start % 320 == 0 and start > 0, "silence first, speech on a frame boundary"
    assert np.array_equal(audio[start : start + 1000], utterance)
    assert not audio[start + 1000 :].any(), "silence after the utterance"
    assert spoken_at * 320 >= start + 1000, "speak() returns once the last frame was sent"
    assert mic.speech_frames_sent == 4


async def test_a_noisy_line_carries_its_floor_under_silence_and_speech() -> None:
    mic = SimulatedAudioInput(sample_rate=16000, frame_ms=20, noise_dbfs=-60.0)
    loud = np.full(640, 10000, dtype=np.int16)  # two frames
    frames: list[rtc.AudioFrame] = []
    listener = asyncio.create_task(record(mic, frames, 60))
    await asyncio.sleep(0.3)
    await asyncio.wait_for(mic.speak(loud), 5)
    await asyncio.wait_for(listener, 5)

    audio = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    speech = np.flatnonzero(audio > 5000)
    assert len(speech) == 640, "the utterance is there, once, the floor added to it"
    quiet = np.delete(audio, speech).astype(np.float64)
    rms = float(np.sqrt(np.mean(quiet**2)))
    expected = 32767 / np.sqrt(2) * 10 ** (-60 / 20)  # about 23
    assert 0.8 * expected < rms < 1.2 * expected, f"floor at {rms:.1f}, not -60 dBFS"
    under = audio[speech].astype(np.int32) - 10000
    assert under.any() and abs(float(under.std()) - expected) < 0.3 * expected


def test_line_noise_is_clipped_to_int16_at_its_loudest() -> None:
    floor = line_noise(-20.0, 16000, seed=1)
    assert floor.dtype == np.int16 and len(floor) == 16000
    assert floor.min() >= -32768 and floor.max() <= 32767


async def test_input_can_send_what_a_room_delivers() -> None:
    """livekit's AudioInputOptions: 50 ms frames, at 24 kHz unless the agent asks."""
    room = AudioInputOptions()
    mic = SimulatedAudioInput(sample_rate=room.sample_rate, frame_ms=room.frame_size_ms)
    first = await asyncio.wait_for(mic.__anext__(), 1)
    second = await asyncio.wait_for(mic.__anext__(), 1)
    mic.close()
    for frame in (first, second):
        assert frame.sample_rate == room.sample_rate
        assert frame.samples_per_channel == room.sample_rate * room.frame_size_ms // 1000


def test_a_clip_at_the_room_rate_keeps_its_length_and_its_sound() -> None:
    clip = speech_clips()[1]
    at_24k = clip.at_rate(24000)
    assert clip.at_rate(24000) is at_24k, "resampled once, then kept"
    assert clip.at_rate(clip.sample_rate) is clip.samples
    assert abs(len(at_24k) - 1.5 * len(clip.samples)) <= 0.01 * len(clip.samples)
    back = clip.at_rate(24000)[::3].astype(np.float64)  # every third sample: 8 kHz
    ref = clip.samples[::2].astype(np.float64)
    n = min(len(back), len(ref))
    lag = int(np.argmax(np.correlate(back[: n // 2], ref[: n // 2], "full"))) - (n // 2 - 1)
    assert abs(lag) < 20, "no shift beyond the resampler's own delay"
    energy_in = float(np.sqrt(np.mean(clip.samples.astype(np.float64) ** 2)))
    energy_out = float(np.sqrt(np.mean(at_24k.astype(np.float64) ** 2)))
    assert 0.9 * energy_in < energy_out < 1.1 * energy_in


async def test_closed_input_ends_the_stream_and_fails_pending_speech() -> None:
    mic = SimulatedAudioInput()
    pending = asyncio.create_task(mic.speak(np.ones(16000, np.int16)))
    await asyncio.sleep(0)
    mic.close()
    with pytest.raises(InputClosed):
        await pending
    with pytest.raises(StopAsyncIteration):
        await mic.__anext__()
    with pytest.raises(InputClosed, match="hung up"):
        await mic.speak(np.ones(10, np.int16))


def _tone(seconds: float, rate: int = 24000) -> rtc.AudioFrame:
    n = int(seconds * rate)
    return rtc.AudioFrame(np.full(n, 100, np.int16).tobytes(), rate, 1, n)


async def test_output_plays_a_segment_and_reports_its_full_length() -> None:
    out = SimulatedAudioOutput()
    started: list[float] = []
    out.on("playback_started", lambda ev: started.append(ev.created_at))
    for _ in range(3):
        await out.capture_frame(_tone(0.05))
    out.flush()
    ev: PlaybackFinishedEvent = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert ev.interrupted is False
    assert ev.playback_position == pytest.approx(0.15, abs=1e-6)
    assert len(started) == 1 and out.segments_played == 1
    await out.aclose()


async def test_clear_buffer_interrupts_at_the_position_reached() -> None:
    out = SimulatedAudioOutput()
    playing = asyncio.Event()
    out.on("playback_started", lambda _: playing.set())
    for _ in range(50):
        await out.capture_frame(_tone(0.2))  # 10 s
    out.flush()
    await asyncio.wait_for(playing.wait(), 5)
    await asyncio.sleep(0.05)
    out.clear_buffer()
    ev: PlaybackFinishedEvent = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert ev.interrupted is True
    assert 0 < ev.playback_position < 10
    assert out.segments_interrupted == 1
    # the next segment plays normally
    await out.capture_frame(_tone(0.05))
    out.flush()
    ev = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert ev.interrupted is False and ev.playback_position == pytest.approx(0.05, abs=1e-6)
    await out.aclose()


async def test_clear_before_flush_drops_the_rest_of_the_segment() -> None:
    out = SimulatedAudioOutput()
    await out.capture_frame(_tone(5))
    out.clear_buffer()
    await out.capture_frame(_tone(5))
    out.flush()
    ev: PlaybackFinishedEvent = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert ev.interrupted is True and ev.playback_position < 5
    await out.aclose()


async def test_paused_output_holds_playback_until_resumed() -> None:
    out = SimulatedAudioOutput()
    out.pause()
    await out.capture_frame(_tone(0.1))
    out.flush()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(out.wait_for_playout(), 0.5)
    out.resume()
    ev: PlaybackFinishedEvent = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert ev.interrupted is False and ev.playback_position == pytest.approx(0.1, abs=1e-6)
    await out.aclose()


async def test_flush_without_audio_and_idle_clear_report_nothing() -> None:
    out = SimulatedAudioOutput()
    finished: list[PlaybackFinishedEvent] = []
    out.on("playback_finished", finished.append)
    out.flush()
    out.clear_buffer()
    await asyncio.sleep(0.05)
    assert finished == []
    await out.capture_frame(_tone(0.02))
    out.flush()
    ev: PlaybackFinishedEvent = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert ev.interrupted is False and len(finished) == 1
    await out.aclose()


async def test_detaching_finishes_pending_segments_as_interrupted() -> None:
    out = SimulatedAudioOutput()
    await out.capture_frame(_tone(5))
    out.flush()
    out.on_detached()
    ev: PlaybackFinishedEvent = await asyncio.wait_for(out.wait_for_playout(), 1)
    assert ev.interrupted is True


async def test_the_microphone_marks_when_an_utterance_ends_in_real_time() -> None:
    mic = SimulatedAudioInput(sample_rate=16000, frame_ms=20)
    loop = asyncio.get_running_loop()
    first = await mic.__anext__()  # the schedule starts with this frame, whose slot ends now
    slot0 = loop.time()
    assert first.samples_per_channel == 320 and mic.speech_ended_at is None

    async def pull() -> None:
        while mic.speech_ended_at is None:
            await mic.__anext__()

    puller = asyncio.create_task(pull())
    await asyncio.wait_for(mic.speak(np.ones(1000, np.int16)), 5)  # 4 frames of speech
    await asyncio.wait_for(puller, 5)
    ended = mic.speech_ended_at
    assert ended is not None
    # frame 0 was silence; speech filled frames 1-4, the last of them handed over (its audio
    # spoken) 4 slots after the first
    assert ended == pytest.approx(slot0 + 4 * 0.02, abs=0.005)
    assert ended >= loop.time() - 0.03, "the end of speech is the slot's end, not a later read"
    mic.close()


async def test_the_earpiece_tells_when_a_reply_started_playing() -> None:
    out = SimulatedAudioOutput()
    loop = asyncio.get_running_loop()
    before = loop.time()
    assert out.first_heard_after(before) is None
    await asyncio.sleep(0.03)
    await out.capture_frame(_tone(0.05))
    out.flush()
    await asyncio.wait_for(out.wait_for_playout(), 5)
    heard = out.first_heard_after(before)
    assert heard is not None and before + 0.03 <= heard <= loop.time()
    assert out.first_heard_after(heard) is None, "only segments that start after t count"
    await out.aclose()
