"""The shared VAD decides exactly as stock Silero: same speech starts and ends.

Every signal goes through a stock `silero.VAD` stream and through `SharedVAD`; their
START_OF_SPEECH / END_OF_SPEECH events must agree in order and within one 32 ms window
(at 16 kHz they agree to the sample, since the model sees the same input).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from livekit.agents.vad import VADEvent, VADEventType

from openrtc.vad import SharedVAD

from .signals import (
    RATE,
    WINDOW,
    assert_same_boundaries,
    boundaries,
    clip,
    frames,
    run_stream,
    signals,
    silence,
)


def _inference(events: list[VADEvent]) -> list[VADEvent]:
    return [ev for ev in events if ev.type is VADEventType.INFERENCE_DONE]


async def test_every_signal_gets_the_same_events_one_stream_at_a_time(
    stock: Any, shared: SharedVAD
) -> None:
    spoken = 0
    for name, samples in signals().items():
        expected = await run_stream(stock, samples)
        got = await run_stream(shared, samples)
        assert_same_boundaries(expected, got, name)
        spoken += len(boundaries(expected))
        a, b = _inference(expected), _inference(got)
        assert [e.samples_index for e in a] == [e.samples_index for e in b], name
        assert np.allclose([e.probability for e in a], [e.probability for e in b], atol=1e-4)
        assert [e.speaking for e in a] == [e.speaking for e in b], name
        for x, y in zip(a, b, strict=True):
            assert bytes(x.frames[0].data) == bytes(y.frames[0].data), name
    assert spoken >= 12, "the clips were heard as speech (a start and an end each)"


async def test_speech_events_carry_the_same_fields_and_audio(stock: Any, shared: SharedVAD) -> None:
    samples = signals()["clips_with_gaps"]
    expected = [
        e for e in await run_stream(stock, samples) if e.type is not VADEventType.INFERENCE_DONE
    ]
    got = [
        e for e in await run_stream(shared, samples) if e.type is not VADEventType.INFERENCE_DONE
    ]
    assert len(expected) == 4, "two speeches: the 0.3 s gap is shorter than min_silence"
    for x, y in zip(expected, got, strict=True):
        assert (x.type, x.samples_index, x.speaking) == (y.type, y.samples_index, y.speaking)
        assert x.timestamp == pytest.approx(y.timestamp)
        assert x.speech_duration == pytest.approx(y.speech_duration)
        assert x.silence_duration == pytest.approx(y.silence_duration)
        assert bytes(x.frames[0].data) == bytes(y.frames[0].data), "same speech audio"


async def test_many_streams_at_once_with_different_offsets_are_batched_and_kept_apart(
    stock: Any, shared: SharedVAD
) -> None:
    base = signals()
    inputs = [
        np.concatenate([silence(offset), base[name]])
        for offset, name in [
            (0.0, "clips_with_gaps"),
            (0.13, "clip0"),
            (0.71, "clips_with_gaps"),
            (0.02, "noise"),
            (1.3, "clip2"),
            (0.5, "speech_over_noise"),
            (0.0, "silence"),
            (0.29, "clip3"),
        ]
    ]
    expected = [await run_stream(stock, samples) for samples in inputs]
    views = [shared.for_session(), shared.for_session()]
    streams = [views[i % 2].stream() for i in range(len(inputs))]
    batcher = shared.batcher()
    before = batcher.stats()

    async def collect(stream: Any) -> list[VADEvent]:
        return [ev async for ev in stream]

    consumers = [asyncio.create_task(collect(s)) for s in streams]
    feeds = [list(frames(samples)) for samples in inputs]
    for step in range(max(len(f) for f in feeds)):
        for stream, feed in zip(streams, feeds, strict=True):
            if step < len(feed):
                stream.push_frame(feed[step])
            elif step == len(feed):
                stream.end_input()
        if step % 4 == 3:
            await asyncio.sleep(0.005)
    for stream, feed in zip(streams, feeds, strict=True):
        if len(feed) == max(len(f) for f in feeds):
            stream.end_input()
    got = await asyncio.wait_for(asyncio.gather(*consumers), 30)

    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert_same_boundaries(a, b, f"stream {i}")
        assert len(_inference(a)) == len(_inference(b)), f"stream {i}"
    after = batcher.stats()
    windows = after["inferences"] - before["inferences"]
    batches = after["batches"] - before["batches"]
    assert windows == sum(len(_inference(a)) for a in expected)
    assert windows / batches > 2, "windows of different streams went through one model call"


async def test_a_flush_resets_the_segment_as_stock_does(stock: Any, shared: SharedVAD) -> None:
    first = np.concatenate([silence(0.3), clip(1)[: RATE // 2]])
    second = np.concatenate([silence(0.2), clip(2), silence(1.0)])

    async def run(vad: Any) -> list[VADEvent]:
        stream = vad.stream()
        for frame in frames(first):
            stream.push_frame(frame)
        stream.flush()
        for frame in frames(second):
            stream.push_frame(frame)
        stream.end_input()
        return [ev async for ev in stream]

    expected, got = await run(stock), await run(shared)
    assert_same_boundaries(expected, got, "flush")
    indexes = [e.samples_index for e in _inference(got)]
    assert indexes == [e.samples_index for e in _inference(expected)]
    assert indexes.count(WINDOW) == 2, "sample indexes restart after the flush"


@pytest.mark.parametrize("rate", [48000, 24000])
async def test_resampled_input_gives_the_same_speech_within_one_window(
    stock: Any, shared: SharedVAD, rate: int
) -> None:
    samples = signals()["clips_with_gaps"]
    positions = np.arange(int(len(samples) * rate / RATE)) * RATE / rate
    upsampled = np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)
    expected = await run_stream(stock, upsampled, rate)
    got = await run_stream(shared, upsampled, rate)
    # livekit's resampler dithers, so two stock streams differ slightly on the same input
    assert_same_boundaries(expected, got, f"{rate} Hz")
    assert len(boundaries(got)) == 4
    a, b = _inference(expected), _inference(got)
    assert [sum(f.samples_per_channel for f in e.frames) for e in a] == [
        sum(f.samples_per_channel for f in e.frames) for e in b
    ], "each window stands for the same input audio"


async def test_twin_streams_of_one_session_share_rows_until_they_diverge(
    stock: Any, shared: SharedVAD
) -> None:
    """A call's two VAD streams hear the same frames: one model row serves both, exactly."""
    samples = signals()["clips_with_gaps"]
    expected = await run_stream(stock, samples)
    feed = list(frames(samples))
    flushed = stock.stream()
    for step, frame in enumerate(feed):
        flushed.push_frame(frame)
        if step == len(feed) // 2:
            flushed.flush()
    flushed.end_input()
    expected_flushed = [ev async for ev in flushed]
    session, other = shared.for_session(), shared.for_session()
    twins = [session.stream(), session.stream()]
    stranger = other.stream()
    batcher = shared.batcher()
    before = batcher.stats()["twins"]

    async def collect(stream: Any) -> list[VADEvent]:
        return [ev async for ev in stream]

    consumers = [asyncio.create_task(collect(s)) for s in (*twins, stranger)]
    for step, frame in enumerate(feed):
        for stream in (*twins, stranger):
            stream.push_frame(frame)
        if step == len(feed) // 2:
            twins[1].flush()  # the twins diverge here; results must still be exact
        if step % 4 == 3:
            await asyncio.sleep(0.005)
    for stream in (*twins, stranger):
        stream.end_input()
    first, second, third = await asyncio.wait_for(asyncio.gather(*consumers), 30)

    assert_same_boundaries(expected, first, "twin")
    assert_same_boundaries(expected_flushed, second, "flushed twin")
    assert_same_boundaries(expected, third, "other session")
    shared_rows = batcher.stats()["twins"] - before
    windows_before_flush = (len(feed) // 2) * 320 // WINDOW
    if shared.runtime == "native":
        assert shared_rows == 0, "native states cannot be compared, so none is shared"
    else:
        assert windows_before_flush - 2 <= shared_rows <= windows_before_flush + 1, (
            "only the same session's streams share rows, and only while in step"
        )
    probabilities = [e.probability for e in _inference(second)]
    assert (
        probabilities[: windows_before_flush - 1]
        == [e.probability for e in _inference(first)][: windows_before_flush - 1]
    )
