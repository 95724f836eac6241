"""SharedVAD streams behave as livekit's VADStream contract says, with no task per stream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from livekit.agents.metrics import VADMetrics
from livekit.agents.vad import VAD, VADEventType, VADStream
from livekit.plugins import silero
from livekit.plugins.silero import onnx_model

from openrtc.vad import SharedVAD, batchers_of
from openrtc.vad.native import NativeModel

from .signals import boundaries, clip, frames, run_stream, signals, silence


def _batcher_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "openrtc.vad_batcher"]


async def test_it_is_a_livekit_vad_with_silero_options(shared: SharedVAD, stock: Any) -> None:
    assert isinstance(shared, VAD)
    assert shared.capabilities.update_interval == stock.capabilities.update_interval
    assert shared.min_silence_duration == stock.min_silence_duration == 0.55
    stream = shared.stream()
    assert isinstance(stream, VADStream)
    await stream.aclose()


async def test_end_input_ends_the_events_and_input_is_then_refused(shared: SharedVAD) -> None:
    stream = shared.stream()
    for frame in frames(np.concatenate([silence(0.2), clip(0), silence(0.8)])):
        stream.push_frame(frame)
    stream.end_input()
    events = [ev async for ev in stream]
    assert [t for t, _ in boundaries(events)] == ["start_of_speech", "end_of_speech"]
    with pytest.raises(RuntimeError, match="input ended"):
        stream.push_frame(next(frames(silence(0.02))))
    await stream.aclose()


async def test_aclose_stops_a_waiting_consumer_and_the_batcher_task(shared: SharedVAD) -> None:
    stream = shared.stream()
    consumer = asyncio.create_task(anext(stream, None))
    stream.push_frame(next(frames(silence(0.02))))
    await asyncio.sleep(0.05)
    assert _batcher_tasks(), "a batcher runs while a stream is open"
    await stream.aclose()
    assert await asyncio.wait_for(consumer, 1) is None
    with pytest.raises(RuntimeError, match="closed"):
        stream.push_frame(next(frames(silence(0.02))))
    await asyncio.sleep(0.05)
    assert not _batcher_tasks(), "no stream left: the batcher task ended"


async def test_each_session_view_hears_only_its_own_streams_metrics(shared: SharedVAD) -> None:
    mine, theirs = shared.for_session(), shared.for_session()
    heard: dict[str, list[VADMetrics]] = {"mine": [], "theirs": []}
    mine.on("metrics_collected", heard["mine"].append)
    theirs.on("metrics_collected", heard["theirs"].append)
    events = await run_stream(mine, silence(32 * 2 * 0.032 + 0.01))
    assert sum(ev.type is VADEventType.INFERENCE_DONE for ev in events) == 64
    assert [m.inference_count for m in heard["mine"]] == [32, 32]
    assert heard["theirs"] == []
    assert all(m.label == mine._label and m.inference_duration_total >= 0 for m in heard["mine"])


async def test_update_options_changes_decisions_as_on_stock(stock: Any) -> None:
    samples = signals()["clips_with_gaps"]
    plain = SharedVAD.from_silero(stock)
    tuned = plain.for_session()
    tuned.update_options(min_silence_duration=0.2)
    assert plain.min_silence_duration == 0.55 and tuned.min_silence_duration == 0.2
    reference = silero.VAD.load(min_silence_duration=0.2)
    got = boundaries(await run_stream(tuned, samples))
    assert got == boundaries(await run_stream(reference, samples))
    assert len(got) > len(boundaries(await run_stream(plain, samples))), "gaps now end speech"


async def test_a_model_failure_reaches_the_consumer() -> None:
    real = onnx_model.new_inference_session(True)

    class Failing:
        failing = False

        def run(self, names: Any, feeds: dict[str, Any]) -> Any:
            if Failing.failing:
                raise RuntimeError("onnx exploded")
            return real.run(names, feeds)

    vad = SharedVAD(Failing(), runtime="onnx")
    Failing.failing = True  # after the load-time checks
    stream = vad.stream()
    for frame in frames(silence(0.5)):
        stream.push_frame(frame)
    with pytest.raises(RuntimeError, match="onnx exploded"):
        async for _ in stream:
            pass
    await stream.aclose()


async def test_a_native_model_failure_reaches_the_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vad = SharedVAD.load(runtime="native")

    def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError("native exploded")

    monkeypatch.setattr(NativeModel, "run", explode)
    stream = vad.stream()
    for frame in frames(silence(0.5)):
        stream.push_frame(frame)
    with pytest.raises(RuntimeError, match="native exploded"):
        async for _ in stream:
            pass
    await stream.aclose()


class _Fatal(BaseException):
    """Not an Exception: what `except Exception` in a model loop would let through."""


async def test_an_error_that_is_not_an_exception_fails_the_streams_and_the_next_is_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vad = SharedVAD.load(runtime="native")
    real = NativeModel.run
    calls = {"n": 0}

    def fatal_once(self: NativeModel, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise _Fatal("native died")
        return real(self, *args)

    monkeypatch.setattr(NativeModel, "run", fatal_once)
    stream = vad.stream()
    for frame in frames(silence(0.5)):
        stream.push_frame(frame)
    with pytest.raises(_Fatal):
        async for _ in stream:
            pass
    await stream.aclose()
    after = vad.stream()  # a new stream restarts the batcher
    for frame in frames(silence(0.3)):
        after.push_frame(frame)
    after.end_input()
    events = [ev async for ev in after]
    assert sum(ev.type is VADEventType.INFERENCE_DONE for ev in events) == 9


def test_native_runtime_is_refused_where_it_would_answer_differently() -> None:
    """Another model file (here: the bundled one at 8 kHz) stays on ONNX."""
    assert SharedVAD.load(sample_rate=8000).runtime == "onnx"
    assert SharedVAD.load().runtime == "native"
    with pytest.raises(ValueError, match="runtime='native'"):
        SharedVAD.load(sample_rate=8000, runtime="native")
    with pytest.raises(ValueError, match="'auto', 'native' or 'onnx'"):
        SharedVAD.load(runtime="gpu")  # type: ignore[arg-type]


def test_bad_options_are_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="8000 or 16000"):
        SharedVAD.load(sample_rate=44100)
    with pytest.raises(ValueError, match="deactivation_threshold"):
        SharedVAD.load(deactivation_threshold=0)
    with pytest.raises(TypeError, match="SharedVAD.load"):
        SharedVAD.from_silero(object())


async def test_behind_s_says_how_far_behind_real_time_the_batcher_runs(shared: SharedVAD) -> None:
    loop = asyncio.get_running_loop()
    stream = shared.stream()
    batcher = shared.batcher()
    assert batcher in batchers_of(loop)
    assert batcher.behind_s() == 0.0
    for frame in frames(silence(0.5)):
        stream.push_frame(frame)
    time.sleep(0.3)  # the loop is blocked: no batch can run, the windows wait
    assert batcher.behind_s() >= 0.3
    assert batcher.stats()["worst_delay_ms"] == 0.0  # reading it resets nothing above
    deadline = loop.time() + 20
    while batcher.behind_s() > 0.0 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert batcher.behind_s() == 0.0, "every window was decided: nothing waits"
    assert batcher.stats()["worst_delay_ms"] >= 300
    await stream.aclose()
