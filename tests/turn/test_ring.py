"""The ring holds exactly what livekit's shifting buffer holds, frame after frame."""

from __future__ import annotations

import numpy as np
from livekit import rtc
from livekit.agents.utils import AudioArrayBuffer

from openrtc.turn import RecentAudio


def test_the_window_matches_livekits_buffer_through_pushes_and_flushes() -> None:
    rng = np.random.default_rng(7)
    ours = RecentAudio(1.2)
    stock = AudioArrayBuffer(buffer_size=19200, sample_rate=16000)
    assert ours.capacity == 19200
    for step in range(600):
        channels = 2 if step % 5 == 0 else 1
        n = int(rng.choice([1, 160, 320, 480, 777, 4000, 19199, 19200]))
        samples = rng.integers(-32768, 32767, n * channels, dtype=np.int16)
        frame = rtc.AudioFrame(samples.tobytes(), 16000, channels, n)
        ours.push_frame(frame)
        stock.push_frame(frame)
        if step % 37 == 0:  # a committed turn
            ours.clear()
            stock.shift(len(stock))
        assert len(ours) == len(stock)
        assert np.array_equal(ours.read(), stock.read()), step


def test_a_frame_longer_than_the_window_keeps_its_newest_samples() -> None:
    ours = RecentAudio(0.01)
    ours.push(np.arange(100, dtype=np.int16))
    ours.push(np.arange(1000, 1500, dtype=np.int16))
    assert np.array_equal(ours.read(), np.arange(1340, 1500, dtype=np.int16))
