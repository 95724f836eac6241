"""Silero run on many streams at once: one ONNX call for a batch of windows.

The Silero ONNX model takes a batch dimension (input [B, context + window], state
[2, B, 128]), so the windows due on every stream can go through one call. Each stream
owns a slot in this object's state and context tables; a batch gathers its slots' rows,
runs, and writes the new rows back, so streams never see each other's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

STATE_SHAPE = (2, 128)
WINDOWS = {16000: (512, 64), 8000: (256, 32)}
"""Model sample rate -> (window samples, context samples), as the Silero model expects."""

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]


class SlotTable:
    """Which stream slots are free. A slot released while a batch runs is held until the
    batch ends, so that batch cannot write into a slot a new stream was given meanwhile."""

    def __init__(self) -> None:
        self._free: list[int] = []
        self._held: list[int] = []
        self._in_flight = False

    def add(self, slots: Iterable[int]) -> None:
        """New slots, free from the start; taken last-added first."""
        self._free.extend(slots)

    def take(self) -> int | None:
        """A free slot, or None when there is none (never while a batch runs)."""
        if self._in_flight:
            raise RuntimeError("a VAD slot cannot be allocated while a batch is running.")
        return self._free.pop() if self._free else None

    def give(self, slot: int) -> None:
        (self._held if self._in_flight else self._free).append(slot)

    def begin(self) -> None:
        self._in_flight = True

    def end(self) -> None:
        self._in_flight = False
        self._free.extend(self._held)
        self._held.clear()


class WindowModel(Protocol):
    """What the batcher needs of a model: per-stream slots, and one call for many windows."""

    sample_rate: int
    window: int
    folds_twins: bool
    """Whether `same_state` can ever be true (streams in step share one row)."""
    inline: bool
    """Whether `run` is cheap enough to call on the event loop instead of a thread."""

    @property
    def capacity(self) -> int: ...

    def allocate(self) -> int: ...

    def release(self, slot: int) -> None: ...

    def reset(self, slot: int) -> None: ...

    def begin(self) -> None: ...

    def end(self) -> None: ...

    def same_state(self, a: int, b: int) -> bool: ...

    def run(
        self,
        slots: Sequence[int],
        windows: Sequence[I16],
        twins: Sequence[tuple[int, int]] = (),
    ) -> F32: ...


class BatchModel:
    """The Silero ONNX session plus per-slot recurrent state and audio context."""

    folds_twins = True
    inline = False

    def __init__(self, session: Any, sample_rate: int = 16000, capacity: int = 64) -> None:
        if sample_rate not in WINDOWS:
            raise ValueError(f"Silero runs at 8000 or 16000 Hz, not {sample_rate}; pick one.")
        self.session = session
        self.sample_rate = sample_rate
        self.window, self.context_size = WINDOWS[sample_rate]
        self._sr = np.array(sample_rate, dtype=np.int64)
        self._state = np.zeros((STATE_SHAPE[0], capacity, STATE_SHAPE[1]), dtype=np.float32)
        self._context = np.zeros((capacity, self.context_size), dtype=np.float32)
        self._slots = SlotTable()
        self._slots.add(range(capacity - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return int(self._context.shape[0])

    def allocate(self) -> int:
        """A fresh slot with zero state, for a new stream (never while a batch runs)."""
        slot = self._slots.take()
        if slot is None:
            self._grow()
            slot = self._slots.take()
            assert slot is not None
        self.reset(slot)
        return slot

    def release(self, slot: int) -> None:
        """Give a slot back; while a batch runs, it is held so that batch cannot clobber it."""
        self._slots.give(slot)

    def reset(self, slot: int) -> None:
        self._state[:, slot, :] = 0.0
        self._context[slot, :] = 0.0

    def _grow(self) -> None:
        old = self.capacity
        state = np.zeros((STATE_SHAPE[0], old * 2, STATE_SHAPE[1]), dtype=np.float32)
        context = np.zeros((old * 2, self.context_size), dtype=np.float32)
        state[:, :old, :] = self._state
        context[:old] = self._context
        self._state, self._context = state, context
        self._slots.add(range(old * 2 - 1, old - 1, -1))

    def begin(self) -> None:
        """A batch is about to run off the loop: slots released meanwhile are held back."""
        self._slots.begin()

    def end(self) -> None:
        self._slots.end()

    def same_state(self, a: int, b: int) -> bool:
        """Whether two slots would answer the same window identically."""
        # byte comparison: several times cheaper than np.array_equal on arrays this small
        return bool(
            self._context[a].tobytes() == self._context[b].tobytes()
            and self._state[:, a, :].tobytes() == self._state[:, b, :].tobytes()
        )

    def run(
        self,
        slots: Sequence[int],
        windows: Sequence[I16],
        twins: Sequence[tuple[int, int]] = (),
    ) -> F32:
        """Speech probabilities for one window per slot; updates those slots' state.

        `twins` holds (slot, i) pairs: a slot whose state and window equal those of
        `slots[i]`; it is not run, it takes that row's new state (its result is row i's).
        Safe to call from a worker thread between `begin()` and `end()`: only the rows of
        these slots are read and written, and no slot is allocated or reused meanwhile.
        """
        idx = np.fromiter(slots, dtype=np.intp, count=len(slots))
        batch = np.empty((len(idx), self.context_size + self.window), dtype=np.float32)
        batch[:, : self.context_size] = self._context[idx]
        np.divide(np.stack(windows), 32767, out=batch[:, self.context_size :], dtype=np.float32)
        out, state = self.session.run(
            None, {"input": batch, "state": self._state[:, idx, :], "sr": self._sr}
        )
        self._state[:, idx, :] = state
        self._context[idx] = batch[:, -self.context_size :]
        for slot, i in twins:
            self._state[:, slot, :] = state[:, i, :]
            self._context[slot] = batch[i, -self.context_size :]
        return np.asarray(out, dtype=np.float32).reshape(-1)


def check_batching(model: BatchModel) -> None:
    """Fail loudly unless the model gives each stream of a batch what it gives it alone."""
    rng = np.random.default_rng(7)
    windows = [(rng.standard_normal(model.window) * 3000).astype(np.int16) for _ in range(3)]
    batched = [model.allocate() for _ in windows]
    alone = [model.allocate() for _ in windows]
    try:
        for _ in range(2):
            together = model.run(batched, windows)
            single = np.concatenate(
                [model.run([s], [w]) for s, w in zip(alone, windows, strict=True)]
            )
        if together.shape != (len(windows),) or not np.allclose(together, single, atol=1e-4):
            raise RuntimeError(
                "this Silero model gives different results in a batch than alone; "
                "use the stock silero.VAD (shared_vad=False) with this model file."
            )
    finally:
        for slot in (*batched, *alone):
            model.release(slot)
