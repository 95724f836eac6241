"""Silero through livekit's native runtime: one small model state per stream, no ONNX.

`livekit-local-inference` (a dependency of livekit-agents, the engine of its
`inference.VAD`) carries the same Silero network compiled natively. On this project's
benchmark machine one window costs it ~17 us of CPU, against ~50 us per row of a batched
ONNX call, and it takes int16 audio as it comes. Its state cannot be copied, so streams
in step are not folded into one row as `BatchModel` folds them; each slot is simply run.

It runs on the event loop (`inline`). It releases the GIL for every window, and on a
thread each window would then wait for a busy loop to hand the GIL back (up to the 5 ms
switch interval): 150 windows took ~770 ms per tick that way, against ~3 ms inline.

It stands in for the ONNX model only where it answers like it (`answers_like`): the
bundled 16 kHz model, not a model file of the user's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .model import F32, I16, BatchModel, SlotTable

SAMPLE_RATE = 16000
TOLERANCE = 1e-3
"""Largest difference in speech probability accepted between the two runtimes."""


def available() -> bool:
    try:
        import livekit.local_inference  # noqa: F401
    except ImportError:
        return False
    return True


class NativeModel:
    """Per-slot native Silero states behind `BatchModel`'s interface (16 kHz only)."""

    folds_twins = False
    inline = True
    SAMPLE_RATE = SAMPLE_RATE

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        from livekit.local_inference import VAD_WINDOW_SAMPLES

        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"the native Silero runs at {SAMPLE_RATE} Hz, not {sample_rate}.")
        self.sample_rate = sample_rate
        self.window: int = VAD_WINDOW_SAMPLES
        self._models: list[Any] = []
        self._slots = SlotTable()

    @property
    def capacity(self) -> int:
        return len(self._models)

    def allocate(self) -> int:
        """A slot with fresh state (never while a batch runs)."""
        slot = self._slots.take()
        if slot is None:
            from livekit.local_inference import VAD

            self._models.append(VAD())
            return len(self._models) - 1
        self.reset(slot)
        return slot

    def release(self, slot: int) -> None:
        self._slots.give(slot)

    def reset(self, slot: int) -> None:
        self._models[slot].reset()

    def begin(self) -> None:
        self._slots.begin()

    def end(self) -> None:
        self._slots.end()

    def same_state(self, a: int, b: int) -> bool:
        """Never known: native states cannot be read, so no two slots are folded."""
        return False

    def run(
        self,
        slots: Sequence[int],
        windows: Sequence[I16],
        twins: Sequence[tuple[int, int]] = (),
    ) -> F32:
        """One probability per slot, each slot's state advanced."""
        if twins:
            raise ValueError("the native model folds no twins; same_state() is never true.")
        models = self._models
        return np.fromiter(
            (models[s].predict(w) for s, w in zip(slots, windows, strict=True)),
            dtype=np.float32,
            count=len(slots),
        )


def probe_windows(window: int = 512, seconds: float = 1.5) -> list[I16]:
    """A voiced, noisy test signal: probabilities from ~0.003 to ~0.3, so that a different
    network cannot agree with the bundled one by both answering "silence"."""
    rate = SAMPLE_RATE
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 20 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    voiced = voiced * 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    noise = np.random.default_rng(7).standard_normal(len(t)) * 800
    pcm = np.clip(voiced * 6000 / np.abs(voiced).max() + noise, -32768, 32767).astype(np.int16)
    return [pcm[i : i + window] for i in range(0, len(pcm) - window + 1, window)]


def answers_like(onnx: BatchModel, native: NativeModel) -> bool:
    """Whether both runtimes give the same probabilities, window by window, on a probe."""
    a, b = onnx.allocate(), native.allocate()
    try:
        for window in probe_windows(native.window):
            expected = float(onnx.run([a], [window])[0])
            got = float(native.run([b], [window])[0])
            if abs(expected - got) > TOLERANCE:
                return False
        return True
    finally:
        onnx.release(a)
        native.release(b)
