"""The batched Silero model: B > 1 works and every stream keeps its own state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from openrtc.vad.model import BatchModel, check_batching

from .signals import WINDOW, clip, noise, three_streams


def test_the_onnx_model_takes_a_batch_dimension(session: Any) -> None:
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert not isinstance(shapes["input"][0], int), "the batch dimension is dynamic"
    model = BatchModel(session)
    slots = [model.allocate() for _ in range(5)]
    probabilities = model.run(slots, [noise(0.032, seed=s)[:WINDOW] for s in range(5)])
    assert probabilities.shape == (5,)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_interleaved_batches_equal_each_stream_run_alone(session: Any) -> None:
    streams = three_streams()
    alone = BatchModel(session)
    expected = []
    for windows in streams:
        slot = alone.allocate()
        expected.append([float(alone.run([slot], [w])[0]) for w in windows])
        alone.release(slot)

    batched = BatchModel(session, capacity=2)  # also grows while streams are live
    slots = [batched.allocate() for _ in streams]
    got: list[list[float]] = [[] for _ in streams]
    for step in range(18):
        # a different subset and order each step: stream state must follow its slot
        order = [i for i in (step % 3, (step + 1) % 3, (step + 2) % 3) if (step + i) % 4]
        out = batched.run([slots[i] for i in order], [streams[i][step] for i in order])
        for i, p in zip(order, out.tolist(), strict=True):
            got[i].append(p)
        for i in set(range(3)) - set(order):
            p = batched.run([slots[i]], [streams[i][step]])
            got[i].append(float(p[0]))
    for a, b in zip(expected, got, strict=True):
        assert np.allclose(a, b, atol=1e-5)
    assert max(max(e) for e in expected) > 0.5, "the clips were heard as speech"


def test_a_released_slot_is_not_reused_while_a_batch_runs(session: Any) -> None:
    model = BatchModel(session, capacity=1)
    first = model.allocate()
    model.run([first], [clip(0)[:WINDOW]])
    model.begin()
    model.release(first)
    with pytest.raises(RuntimeError, match="while a batch is running"):
        model.allocate()
    model.end()
    again = model.allocate()
    assert again == first
    state_is_fresh = BatchModel(session)
    fresh = state_is_fresh.allocate()
    window = clip(1)[:WINDOW]
    assert model.run([again], [window])[0] == pytest.approx(
        state_is_fresh.run([fresh], [window])[0]
    )


def test_check_batching_accepts_the_bundled_model(session: Any) -> None:
    check_batching(BatchModel(session))


def test_check_batching_refuses_a_model_that_mixes_streams(session: Any) -> None:
    class Mixing:
        """Answers every row of a batch with the first row's result."""

        def run(self, names: Any, feeds: dict[str, Any]) -> Any:
            out, state = session.run(names, feeds)
            return np.repeat(out[:1], len(out), axis=0), state

    with pytest.raises(RuntimeError, match="different results in a batch"):
        check_batching(BatchModel(Mixing()))
