"""Test signals and helpers: the bundled speech clips, silence, noise, and VAD drivers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.vad import VADEvent, VADEventType

from openrtc.simulation import speech_clips

RATE = 16000
WINDOW = 512
"""Samples per Silero window at 16 kHz: "one frame" of VAD decisions."""


def cut_windows(samples: np.ndarray) -> list[np.ndarray]:
    """Consecutive whole model windows of `samples` (a partial tail is dropped)."""
    return [samples[i : i + WINDOW] for i in range(0, len(samples) - WINDOW + 1, WINDOW)]


def three_streams(windows: int = 18) -> list[list[np.ndarray]]:
    """Speech after silence, speech then silence, and noise: each as its first windows."""
    sources = [
        np.concatenate([silence(0.2), clip(0)]),
        np.concatenate([clip(1)[:8000], silence(0.3)]),
        noise(0.6, seed=11),
    ]
    return [cut_windows(s)[:windows] for s in sources]


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def noise(seconds: float, level: float = 2000.0, seed: int = 3) -> np.ndarray:
    return noise_samples(int(seconds * RATE), level, seed)


def noise_samples(n: int, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, level, n), -32768, 32767).astype(np.int16)


def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip(a.astype(np.int32) + b, -32768, 32767).astype(np.int16)


def clip(index: int) -> np.ndarray:
    return speech_clips()[index].samples


def signals() -> dict[str, np.ndarray]:
    """Named test signals at 16 kHz: every clip, silence, noise, clips with gaps."""
    out = {
        f"clip{i}": np.concatenate([silence(0.4), clip(i), silence(1.0)])
        for i in range(len(speech_clips()))
    }
    out["silence"] = silence(3.0)
    out["noise"] = noise(3.0)
    out["clips_with_gaps"] = np.concatenate(
        [silence(0.5), clip(1), silence(0.8), clip(2), silence(0.3), clip(3), silence(1.0)]
    )
    quiet = noise_samples(len(clip(0)), 300, seed=9)
    out["speech_over_noise"] = np.concatenate(
        [noise(0.6, 300), mix(clip(0), quiet), noise(1.0, 300, seed=5)]
    )
    return out


def frames(samples: np.ndarray, rate: int = RATE, ms: int = 20) -> Iterator[rtc.AudioFrame]:
    size = rate * ms // 1000
    padded = np.concatenate([samples, np.zeros(-len(samples) % size, dtype=np.int16)])
    for start in range(0, len(padded), size):
        chunk = padded[start : start + size]
        yield rtc.AudioFrame(
            data=chunk.tobytes(), sample_rate=rate, num_channels=1, samples_per_channel=size
        )


async def run_stream(vad: Any, samples: np.ndarray, rate: int = RATE) -> list[VADEvent]:
    """Push a whole signal through one stream of `vad` and collect every event."""
    stream = vad.stream()
    for frame in frames(samples, rate):
        stream.push_frame(frame)
    stream.end_input()
    events = [ev async for ev in stream]
    await stream.aclose()
    return events


def boundaries(events: list[VADEvent]) -> list[tuple[str, int]]:
    """START/END events as (type, samples_index), in order."""
    return [
        (ev.type.value, ev.samples_index)
        for ev in events
        if ev.type in (VADEventType.START_OF_SPEECH, VADEventType.END_OF_SPEECH)
    ]


def assert_same_boundaries(
    stock: list[VADEvent], shared: list[VADEvent], name: str, tolerance: int = WINDOW
) -> None:
    """Same speech starts and ends, in the same order, each within `tolerance` samples."""
    a, b = boundaries(stock), boundaries(shared)
    assert [t for t, _ in a] == [t for t, _ in b], f"{name}: stock {a} != shared {b}"
    for (kind, i), (_, j) in zip(a, b, strict=True):
        assert abs(i - j) <= tolerance, f"{name}: {kind} at sample {i} (stock) vs {j} (shared)"
