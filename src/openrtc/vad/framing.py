"""Cutting one stream's pushed audio into model windows, at push time, with no task.

Each window carries the model-rate samples the model sees and the input-rate samples it
stands for (the audio that goes into the VAD's events). When the input rate differs from
the model's, frames go through livekit's QUICK resampler and the input-rate share of each
window is counted with a fractional carry, exactly as the stock Silero stream does.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from livekit import rtc

from .model import I16

logger = logging.getLogger("openrtc.vad")


@dataclass(frozen=True)
class Window:
    samples: I16
    """Model-rate samples, exactly one model window."""
    chunk: I16
    """Input-rate samples this window stands for."""
    ready_at: float
    """perf_counter() when the window became complete."""


class Flush:
    """A segment boundary in a stream's queue: reset all state when it is reached."""


FLUSH = Flush()


class _Buffer:
    """A growable int16 buffer that appends at the end and consumes from the front."""

    def __init__(self, capacity: int) -> None:
        self.data = np.empty(capacity, dtype=np.int16)
        self.size = 0

    def append(self, samples: I16 | memoryview) -> None:
        n = len(samples)
        if self.size + n > len(self.data):
            grown = np.empty(max(len(self.data) * 2, self.size + n), dtype=np.int16)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : self.size + n] = samples
        self.size += n

    def take(self, n: int) -> I16:
        """A copy of up to n samples from the front, which are then dropped."""
        n = min(n, self.size)
        out = self.data[:n].copy()
        rest = self.size - n
        if rest:
            self.data[:rest] = self.data[n : self.size]
        self.size = rest
        return out

    def clear(self) -> None:
        self.size = 0


class Framer:
    """Turns frames into `Window`s appended to `out`; the stream owns both."""

    def __init__(self, model_rate: int, window: int, out: deque[Window | Flush]) -> None:
        self.model_rate = model_rate
        self.window = window
        self.out = out
        self.input_rate = 0
        self._filling: I16 = np.empty(window, dtype=np.int16)
        self._filled = 0
        self._done: list[I16] = []
        self._input_buf: _Buffer | None = None
        self._resampler: rtc.AudioResampler | None = None
        self._fract = 0.0

    def reset(self) -> None:
        """Drop any partial window (a flush), keeping the input rate already seen."""
        self._filled = 0
        if self._input_buf is not None:
            self._input_buf.clear()
        self._fract = 0.0
        if self._resampler is not None:
            self._resampler = self._new_resampler()

    def _new_resampler(self) -> rtc.AudioResampler:
        return rtc.AudioResampler(
            input_rate=self.input_rate,
            output_rate=self.model_rate,
            quality=rtc.AudioResamplerQuality.QUICK,
        )

    def push(self, frame: rtc.AudioFrame) -> int:
        """Append a frame; returns how many windows it completed."""
        if not self.input_rate:
            self.input_rate = frame.sample_rate
            if self.input_rate != self.model_rate:
                self._resampler = self._new_resampler()
                self._input_buf = _Buffer(self.input_rate)
        elif frame.sample_rate != self.input_rate:
            logger.error(
                "VAD dropped a %d Hz frame: this stream already receives %d Hz audio",
                frame.sample_rate,
                self.input_rate,
            )
            return 0
        if self._resampler is None:
            self._fill(np.frombuffer(frame.data, dtype=np.int16))
        else:
            assert self._input_buf is not None
            self._input_buf.append(frame.data)
            for resampled in self._resampler.push(frame):
                self._fill(np.frombuffer(resampled.data, dtype=np.int16))
        if not self._done:
            return 0
        now = time.perf_counter()
        made = len(self._done)
        for samples in self._done:
            if self._input_buf is None:
                chunk = samples
            else:
                share = self.window * (self.input_rate / self.model_rate) + self._fract
                whole = int(share)
                self._fract = share - whole
                chunk = self._input_buf.take(whole)
            self.out.append(Window(samples, chunk, now))
        self._done.clear()
        return made

    def _fill(self, samples: I16) -> None:
        """Copy samples into the window being filled; each full window is set aside."""
        pos, n = 0, len(samples)
        while pos < n:
            k = min(self.window - self._filled, n - pos)
            self._filling[self._filled : self._filled + k] = samples[pos : pos + k]
            self._filled += k
            pos += k
            if self._filled == self.window:
                self._done.append(self._filling)
                self._filling = np.empty(self.window, dtype=np.int16)
                self._filled = 0
