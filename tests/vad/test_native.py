"""livekit's native Silero behind the batcher: the ONNX model's answers, slot by slot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from openrtc.vad.model import BatchModel
from openrtc.vad.native import NativeModel, answers_like

from .signals import WINDOW, clip, cut_windows, three_streams


def test_interleaved_slots_answer_as_the_onnx_model_does(session: Any) -> None:
    streams = three_streams()
    onnx, native = BatchModel(session), NativeModel()
    onnx_slots = [onnx.allocate() for _ in streams]
    native_slots = [native.allocate() for _ in streams]
    for step in range(18):
        order = [i for i in (step % 3, (step + 1) % 3, (step + 2) % 3) if (step + i) % 4]
        if not order:
            continue
        windows = [streams[i][step] for i in order]
        expected = onnx.run([onnx_slots[i] for i in order], windows)
        got = native.run([native_slots[i] for i in order], windows)
        assert got.dtype == np.float32 and got.shape == (len(order),)
        assert np.allclose(got, expected, atol=1e-4), f"step {step}"
        for i in set(range(3)) - set(order):  # the skipped ones catch up alone
            onnx.run([onnx_slots[i]], [streams[i][step]])
            native.run([native_slots[i]], [streams[i][step]])


def test_a_slot_comes_back_fresh_and_never_while_a_batch_runs() -> None:
    model = NativeModel()
    first = model.allocate()
    speech = cut_windows(clip(0))[:12]
    for window in speech:
        model.run([first], [window])
    model.begin()
    model.release(first)
    with pytest.raises(RuntimeError, match="while a batch is running"):
        model.allocate()
    model.end()
    again = model.allocate()
    assert again == first and model.capacity == 1
    fresh = NativeModel()
    other = fresh.allocate()
    assert model.run([again], [speech[0]])[0] == fresh.run([other], [speech[0]])[0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        NativeModel(8000)
    model = NativeModel()
    slot = model.allocate()
    with pytest.raises(ValueError, match="512"):
        model.run([slot], [np.zeros(WINDOW - 1, dtype=np.int16)])
    with pytest.raises(ValueError, match="folds no twins"):
        model.run([slot], [np.zeros(WINDOW, dtype=np.int16)], [(slot, 0)])
    assert not model.same_state(slot, slot)


def test_answers_like_tells_the_bundled_model_from_another(session: Any) -> None:
    assert answers_like(BatchModel(session), NativeModel())

    class Louder:
        """The bundled model with its probabilities nudged, as a retrained file would be."""

        def run(self, names: Any, feeds: dict[str, Any]) -> Any:
            out, state = session.run(names, feeds)
            return np.clip(out * 1.05, 0, 1), state

    assert not answers_like(BatchModel(Louder()), NativeModel())
