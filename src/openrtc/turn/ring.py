"""The last 1.2 s of a call's audio, kept the way the end-of-turn model wants it.

livekit's local transport keeps the same window in a buffer that moves every sample left
on every frame once it is full (~19k samples copied per 10-20 ms frame, per call). This
ring writes each frame once, in place; the one copy is made when a prediction is asked
for, and it holds the very samples livekit's buffer would hold at that moment.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from livekit import rtc

MODEL_RATE = 16000
"""The end-of-turn model's sample rate (Hz)."""

I16 = npt.NDArray[np.int16]


class RecentAudio:
    """A fixed-size ring of mono int16 samples at 16 kHz: push a frame, read the window."""

    def __init__(self, seconds: float) -> None:
        self.capacity = int(seconds * MODEL_RATE)
        self._buf: I16 = np.zeros(self.capacity, dtype=np.int16)
        self._end = 0
        """Where the next sample goes."""
        self._len = 0
        self._resampler: rtc.AudioResampler | None = None

    def __len__(self) -> int:
        return self._len

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        """Append a frame (resampled to 16 kHz, channels averaged, as livekit does)."""
        if self._resampler is None and frame.sample_rate != MODEL_RATE:
            self._resampler = rtc.AudioResampler(
                input_rate=frame.sample_rate,
                output_rate=MODEL_RATE,
                num_channels=frame.num_channels,
                quality=rtc.AudioResamplerQuality.QUICK,
            )
        frames = self._resampler.push(frame) if self._resampler is not None else [frame]
        for f in frames:
            self.push(_mono(f))

    def push(self, samples: I16) -> None:
        """Append samples; only the newest `capacity` are kept."""
        n = len(samples)
        if n >= self.capacity:
            self._buf[:] = samples[n - self.capacity :]
            self._end, self._len = 0, self.capacity
            return
        first = min(n, self.capacity - self._end)
        self._buf[self._end : self._end + first] = samples[:first]
        self._buf[: n - first] = samples[first:]
        self._end = (self._end + n) % self.capacity
        self._len = min(self.capacity, self._len + n)

    def read(self) -> I16:
        """A copy of the window, oldest sample first."""
        start = self._end - self._len
        if start >= 0:
            return self._buf[start : self._end].copy()
        return np.concatenate((self._buf[start:], self._buf[: self._end]))

    def clear(self) -> None:
        """Forget the audio (a flushed turn); the resampler stays, as livekit's does."""
        self._len = 0


def _mono(frame: rtc.AudioFrame) -> I16:
    count = frame.samples_per_channel * frame.num_channels
    pcm = np.frombuffer(frame.data, dtype=np.int16, count=count)
    if frame.num_channels == 1:
        return pcm
    wide = pcm.reshape(-1, frame.num_channels).sum(axis=1, dtype=np.int32)
    mono: I16 = (wide // frame.num_channels).astype(np.int16)
    return mono
