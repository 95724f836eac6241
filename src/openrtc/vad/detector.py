"""One stream's speech decisions: the stock Silero stream's state machine, minus the I/O.

Given each window's raw speech probability it smooths it (exponential filter, alpha
0.35), keeps the speech buffer with its prefix padding, and produces the same
INFERENCE_DONE / START_OF_SPEECH / END_OF_SPEECH events, with the same fields and the same
arithmetic, as `livekit.plugins.silero.VADStream`; only where the probability comes from
differs (a batched model call instead of one call per window).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from livekit import rtc
from livekit.agents.vad import VADEvent, VADEventType

from .model import I16
from .options import VADOptions

logger = logging.getLogger("openrtc.vad")

FILTER_ALPHA = 0.35

Emit = Callable[[VADEvent], None]


class SpeechDetector:
    def __init__(self, opts: VADOptions, window: int, model_rate: int) -> None:
        self.opts = opts
        self.window = window
        self.window_s = window / model_rate
        self.input_rate = 0
        self._buffer: I16 = np.empty(0, dtype=np.int16)
        self._prefix = 0
        self.reset()

    def reset(self) -> None:
        """Forget the segment: a flush, or a fresh stream."""
        self._filtered: float | None = None
        self.speaking = False
        self._speech_s = 0.0
        self._silence_s = 0.0
        self._sample = 0
        self._timestamp = 0.0
        self._speech_run = 0.0
        self._silence_run = 0.0
        self._index = 0
        self._full = False

    def start(self, input_rate: int) -> None:
        """Size the speech buffer once the stream's input rate is known."""
        self.input_rate = input_rate
        self._prefix = int(self.opts.prefix_padding_duration * input_rate)
        size = int(self.opts.max_buffered_speech * input_rate) + self._prefix
        self._buffer = np.empty(size, dtype=np.int16)

    def options_changed(self, max_buffered_before: float) -> None:
        """Resize the speech buffer after `update_options`, keeping what fits."""
        if not self.input_rate:
            return
        self._prefix = int(self.opts.prefix_padding_duration * self.input_rate)
        size = int(self.opts.max_buffered_speech * self.input_rate) + self._prefix
        resized = np.zeros(size, dtype=np.int16)
        keep = min(size, len(self._buffer))
        resized[:keep] = self._buffer[:keep]
        self._buffer = resized
        self._index = min(self._index, size)
        if self.opts.max_buffered_speech > max_buffered_before:
            self._full = False

    def _speech_frame(self) -> rtc.AudioFrame:
        return rtc.AudioFrame(
            data=self._buffer[: self._index].tobytes(),
            sample_rate=self.input_rate,
            num_channels=1,
            samples_per_channel=self._index,
        )

    def _keep_prefix_only(self) -> None:
        """Outside speech, keep just the last prefix-padding worth of audio."""
        if self._index <= self._prefix:
            return
        self._buffer[: self._prefix] = self._buffer[self._index - self._prefix : self._index]
        self._full = False
        self._index = self._prefix

    def step(self, raw: float, chunk: I16, inference_duration: float, emit: Emit) -> None:
        """Take one window's raw probability and its input audio; emit its events."""
        a = FILTER_ALPHA**1.0
        p = raw if self._filtered is None else a * self._filtered + (1 - a) * raw
        self._filtered = p
        ws = self.window_s
        self._sample += self.window
        self._timestamp += ws

        n = min(len(chunk), len(self._buffer) - self._index)
        if n > 0:
            self._buffer[self._index : self._index + n] = chunk[:n]
            self._index += n
        elif not self._full:
            self._full = True
            logger.warning("max_buffered_speech reached, ignoring further data for this speech")

        if self.speaking:
            self._speech_s += ws
        else:
            self._silence_s += ws
        emit(
            VADEvent(
                type=VADEventType.INFERENCE_DONE,
                samples_index=self._sample,
                timestamp=self._timestamp,
                silence_duration=self._silence_s,
                speech_duration=self._speech_s,
                probability=p,
                inference_duration=inference_duration,
                frames=[
                    rtc.AudioFrame(
                        data=chunk.tobytes(),
                        sample_rate=self.input_rate,
                        num_channels=1,
                        samples_per_channel=len(chunk),
                    )
                ],
                speaking=self.speaking,
                raw_accumulated_silence=self._silence_run,
                raw_accumulated_speech=self._speech_run,
            )
        )

        opts = self.opts
        if p >= opts.activation_threshold or (self.speaking and p > opts.exit_threshold):
            self._speech_run += ws
            self._silence_run = 0.0
            if not self.speaking and self._speech_run >= opts.min_speech_duration:
                self.speaking = True
                self._silence_s = 0.0
                self._speech_s = self._speech_run
                emit(
                    VADEvent(
                        type=VADEventType.START_OF_SPEECH,
                        samples_index=self._sample,
                        timestamp=self._timestamp,
                        silence_duration=self._silence_s,
                        speech_duration=self._speech_s,
                        frames=[self._speech_frame()],
                        speaking=True,
                    )
                )
            return

        self._silence_run += ws
        self._speech_run = 0.0
        if not self.speaking:
            self._keep_prefix_only()
            return
        if self._silence_run >= opts.min_silence_duration:
            self.speaking = False
            self._silence_s = self._silence_run
            emit(
                VADEvent(
                    type=VADEventType.END_OF_SPEECH,
                    samples_index=self._sample,
                    timestamp=self._timestamp,
                    silence_duration=self._silence_s,
                    speech_duration=max(0.0, self._speech_s - self._silence_run),
                    frames=[self._speech_frame()],
                    speaking=False,
                )
            )
            self._speech_s = 0.0
            self._keep_prefix_only()
