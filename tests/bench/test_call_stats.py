"""The worker-side counters behind the density benchmark, on the real Silero VAD."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import vad as lk_vad
from livekit.plugins import silero

from openrtc.ops import call_stats
from openrtc.simulation.media import MIC_TOTALS, SimulatedAudioInput

FRAME = 320  # 20 ms at 16 kHz


def _frame() -> rtc.AudioFrame:
    return rtc.AudioFrame(
        data=np.zeros(FRAME, dtype=np.int16).tobytes(),
        sample_rate=16000,
        num_channels=1,
        samples_per_channel=FRAME,
    )


async def _drain_events(stream: lk_vad.VADStream, idle: float = 0.5) -> int:
    seen = 0
    while True:
        try:
            ev = await asyncio.wait_for(stream.__anext__(), idle)
        except (TimeoutError, StopAsyncIteration):
            return seen
        seen += ev.type == lk_vad.VADEventType.INFERENCE_DONE


@pytest.fixture
def totals() -> call_stats._Totals:
    return call_stats._Totals()


async def test_every_pushed_frame_is_timed_until_its_window_is_done(
    totals: call_stats._Totals,
) -> None:
    vad = call_stats.CountingVAD(silero.VAD.load(), totals)
    stream = vad.stream()
    for _ in range(50):  # 16000 samples: 31 windows of 512 cover 49 whole frames
        stream.push_frame(_frame())
    assert await _drain_events(stream) == 31
    stats = totals.to_dict()
    assert stats["vad_frames_pushed"] == 50
    assert stats["vad_frames_done"] == 49
    assert stats["vad_frames_pending"] == 1
    assert sum(stats["vad_latency_hist"]) == 49
    assert stats["vad_streams_open"] == 1
    assert stats["vad_kinds"] == {"livekit.plugins.silero.vad.VAD": 1}
    await stream.aclose()
    stats = totals.to_dict()
    assert stats["vad_streams_open"] == 0
    assert stats["vad_frames_unfinished"] == 1
    assert stats["vad_frames_pending"] == 0


async def test_a_flush_drops_the_partial_window_and_counting_resumes(
    totals: call_stats._Totals,
) -> None:
    vad = call_stats.CountingVAD(silero.VAD.load(), totals)
    stream = vad.stream()
    for _ in range(10):  # 3200 samples: 6 windows cover 9 frames, 128 samples left over
        stream.push_frame(_frame())
    stream.flush()
    for _ in range(50):
        stream.push_frame(_frame())
    assert await _drain_events(stream) == 6 + 31
    stats = totals.to_dict()
    assert stats["vad_frames_done"] == 9 + 49
    assert stats["vad_frames_flushed"] == 1
    assert stats["vad_frames_pending"] == 1
    await stream.aclose()


async def test_frames_processed_late_are_counted_late(totals: call_stats._Totals) -> None:
    vad = call_stats.CountingVAD(silero.VAD.load(), totals)
    stream = vad.stream()
    for _ in range(8):
        stream.push_frame(_frame())
    time.sleep(0.3)  # the loop is blocked: the VAD cannot run
    await _drain_events(stream)
    stats = totals.to_dict()
    assert stats["vad_frames_done"] == 8
    assert stats["vad_frames_late"] == 8
    first_late_bucket = call_stats.bucket_of(call_stats.FRAME_LATENCY_EDGES_MS, 250)
    assert sum(stats["vad_latency_hist"][first_late_bucket:]) == 8
    await stream.aclose()


async def test_a_lag_probe_runs_while_streams_are_open(totals: call_stats._Totals) -> None:
    vad = call_stats.CountingVAD(silero.VAD.load(), totals)
    stream = vad.stream()
    await asyncio.sleep(0.35)
    time.sleep(0.3)  # the probe due meanwhile wakes >= 200 ms late
    await asyncio.sleep(0.15)
    lag = totals.to_dict()["loop_lag_hist"]
    assert sum(lag) >= 3
    assert sum(lag[call_stats.bucket_of(call_stats.LAG_EDGES_MS, 100) :]) >= 1
    await stream.aclose()
    await asyncio.sleep(0.25)
    frozen = sum(totals.to_dict()["loop_lag_hist"])
    await asyncio.sleep(0.25)
    assert sum(totals.to_dict()["loop_lag_hist"]) == frozen


def test_the_vad_is_wrapped_only_when_call_stats_are_on(monkeypatch: pytest.MonkeyPatch) -> None:
    vad = silero.VAD.load()
    monkeypatch.delenv(call_stats.ENV_FLAG, raising=False)
    assert call_stats.watch_vad(vad) is vad
    monkeypatch.setenv(call_stats.ENV_FLAG, "1")
    wrapped = call_stats.watch_vad(vad)
    assert isinstance(wrapped, call_stats.CountingVAD) and wrapped.inner is vad
    assert call_stats.watch_vad(wrapped) is wrapped
    assert wrapped.capabilities.update_interval == vad.capabilities.update_interval


def test_merge_sums_counters_and_histograms() -> None:
    merged = call_stats.merge(
        [
            {"a": 1, "h": [1, 2], "s": "x", "k": {"silero": 2}},
            {"a": 2, "h": [10, 20], "b": 5, "k": {"silero": 1, "shared": 4}},
        ]
    )
    assert merged == {"a": 3, "h": [11, 22], "b": 5, "k": {"silero": 3, "shared": 4}}


def test_job_process_reports_are_summed_and_dead_gauges_dropped() -> None:
    call_stats.install_collector()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    before = call_stats.snapshot()
    report = {"vad_frames_pushed": 7, "vad_streams_open": 2, "loop_lag_hist": [1] * 20}
    for pid in (os.getpid(), child.pid):
        logging.getLogger("openrtc.call_stats").info(
            "call stats", extra={call_stats.RECORD_FIELD: report, call_stats.PID_FIELD: pid}
        )
    after = call_stats.snapshot()
    assert after["vad_frames_pushed"] - before["vad_frames_pushed"] == 14
    assert after["vad_streams_open"] - before["vad_streams_open"] == 2  # the live pid only
    assert after["processes_reporting"] >= 1


async def test_the_microphone_counts_late_and_skipped_frames() -> None:
    mic = SimulatedAudioInput(sample_rate=16000, frame_ms=20)
    before = MIC_TOTALS.snapshot()
    await mic.__anext__()
    await mic.__anext__()
    time.sleep(0.3)  # a stall shorter than max_lag: the next frames go out late
    await mic.__anext__()
    time.sleep(0.8)  # a stall past max_lag: the schedule restarts, frames are never sent
    await mic.__anext__()
    after = MIC_TOTALS.snapshot()
    assert after["frames_sent"] - before["frames_sent"] == 4
    assert after["frames_late"] - before["frames_late"] >= 1
    assert after["frames_skipped"] - before["frames_skipped"] >= 30
    mic.close()


async def _shared_vad_with_stall(
    totals: call_stats._Totals, caplog: pytest.LogCaptureFixture, stall: float
) -> list[str]:
    """Real-time frames into a counted shared-VAD stream; the loop stalls once midway."""
    from openrtc.vad import SharedVAD

    vad = call_stats.CountingVAD(SharedVAD.load().for_session(), totals)
    stream = vad.stream()
    consumer = asyncio.create_task(_drain_events(stream, idle=2.0))
    caplog.set_level(logging.WARNING, logger="openrtc.vad")
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for i in range(60):  # 1.2 s of audio
        stream.push_frame(_frame())
        if i == 30:
            time.sleep(stall)  # the loop is busy: windows already pushed wait for it
        next_at += 0.02
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    await asyncio.sleep(0.3)
    await stream.aclose()
    consumer.cancel()
    return [r.getMessage() for r in caplog.records if "behind real time" in r.getMessage()]


async def test_the_late_counter_and_the_vad_warning_see_the_same_stall(
    totals: call_stats._Totals, caplog: pytest.LogCaptureFixture
) -> None:
    warnings = await _shared_vad_with_stall(totals, caplog, stall=0.35)
    stats = totals.to_dict()
    assert len(warnings) == 1, warnings
    warned_ms = float(warnings[0].split("VAD is ")[1].split(" ms")[0])
    assert warned_ms > call_stats.LATE_MS
    assert stats["vad_frames_late"] >= 1, "the warning's frames are counted late too"
    late_buckets = stats["vad_latency_hist"][
        call_stats.bucket_of(call_stats.FRAME_LATENCY_EDGES_MS, warned_ms) :
    ]
    assert sum(late_buckets) >= 1, "a frame at least as late as the warning says"


async def test_no_stall_no_warning_and_no_late_frame(
    totals: call_stats._Totals, caplog: pytest.LogCaptureFixture
) -> None:
    warnings = await _shared_vad_with_stall(totals, caplog, stall=0.0)
    assert warnings == []
    stats = totals.to_dict()
    assert stats["vad_frames_done"] >= 50 and stats["vad_frames_late"] == 0


async def test_a_frame_waiting_for_more_audio_is_pending_but_never_late(
    totals: call_stats._Totals,
) -> None:
    """The caller stopped (a hang-up): its last partial window waits for audio, not the VAD."""
    from openrtc.vad import SharedVAD

    vad = call_stats.CountingVAD(SharedVAD.load().for_session(), totals)
    stream = vad.stream()
    for _ in range(10):  # 3200 samples: 6 windows of 512, 128 samples left in frame 10
        stream.push_frame(_frame())
    assert await _drain_events(stream, idle=0.4) == 6
    stats = totals.to_dict()
    assert stats["vad_frames_done"] == 9
    assert (stats["vad_frames_pending"], stats["vad_frames_pending_late"]) == (1, 0)
    for _ in range(5):  # 128 + 1600 samples: 3 more windows end inside frame 15
        stream.push_frame(_frame())
    time.sleep(0.3)  # the loop stalls before the VAD could run: those frames are late
    stats = totals.to_dict()
    assert stats["vad_frames_pending"] == 6
    assert stats["vad_frames_pending_late"] == 5, "frame 15 ends in a partial window"
    await stream.aclose()
