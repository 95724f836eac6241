"""Real speech, livekit's stock local turn detector, and a counted predictor to compare."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.local_inference import EOT

from openrtc.simulation import speech_clips
from openrtc.turn import TurnPredictor

RATE = 16000


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def conversation() -> np.ndarray:
    """Every bundled clip, with pauses short and long between them."""
    parts: list[np.ndarray] = [silence(0.3)]
    for i, clip in enumerate(speech_clips()):
        parts += [clip.samples, silence(0.25 + 0.35 * (i % 3))]
    return np.concatenate(parts)


def frames(samples: np.ndarray, ms: int = 20, rate: int = RATE) -> Iterator[rtc.AudioFrame]:
    size = rate * ms // 1000
    for start in range(0, len(samples) - size + 1, size):
        chunk = samples[start : start + size]
        yield rtc.AudioFrame(chunk.tobytes(), rate, 1, size)


async def settle() -> None:
    """Let the streams' own tasks move every pushed frame into their transports."""
    for _ in range(5):
        await asyncio.sleep(0)


class CountedModel:
    """livekit's real EOT model, counting its calls; `hold()` makes the next call wait."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self._eot = EOT()
        self.calls = 0
        self.fail_with = fail_with
        self._gate = threading.Event()
        self._gate.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        self._gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, pcm: np.ndarray) -> float:
        self.calls += 1
        self.entered.set()
        self._gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        return float(self._eot.predict(pcm))


@pytest.fixture
def model() -> CountedModel:
    return CountedModel()


@pytest.fixture
def predictor(model: CountedModel) -> Iterator[TurnPredictor]:
    p = TurnPredictor(model, name="openrtc-turn-test")
    yield p
    model.release()
    p.close()


async def wait_for(event: threading.Event, timeout: float = 5.0) -> None:
    assert await asyncio.to_thread(event.wait, timeout), "the model was never called"


def probability(event: Any) -> float:
    return float(event.end_of_turn_probability)
