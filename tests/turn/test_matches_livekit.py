"""The shared detector decides as livekit's stock local detector on the same speech.

Both streams get the same frames; predictions are asked for at the same points (and
turns flushed at the same points); the probabilities must agree within 1e-3 (the model
sees the very same samples, so they agree exactly).
"""

from __future__ import annotations

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import inference
from livekit.agents.language import LanguageCode

from openrtc.turn import SharedTurnDetector, TurnPredictor

from .conftest import CountedModel, conversation, frames, probability, settle


def _stereo(samples: np.ndarray) -> list[rtc.AudioFrame]:
    """The conversation as stereo 10 ms frames, the channels not identical.

    At 16 kHz, as the streams want it: livekit's resampler dithers, so two stock streams
    fed the same 48 kHz frames already hand their transports slightly different samples.
    """
    both = np.stack([samples, (samples // 3).astype(np.int16)], axis=1).reshape(-1)
    size = 160
    return [
        rtc.AudioFrame(both[i * 2 : (i + size) * 2].tobytes(), 16000, 2, size)
        for i in range(0, len(samples) - size + 1, size)
    ]


@pytest.mark.parametrize("layout", ["16k_mono_20ms", "16k_stereo_10ms"])
async def test_same_probabilities_as_the_stock_local_detector_on_real_speech(
    layout: str, predictor: TurnPredictor, model: CountedModel
) -> None:
    samples = conversation()
    pushed = list(frames(samples)) if layout == "16k_mono_20ms" else _stereo(samples)
    per_200ms = 10 if layout == "16k_mono_20ms" else 20
    stock = inference.TurnDetector(version="v1-mini").stream()
    ours = SharedTurnDetector(predictor=predictor).stream()
    expected: list[float] = []
    got: list[float] = []
    try:
        for i, frame in enumerate(pushed, start=1):
            stock.push_audio(frame)
            ours.push_audio(frame)
            if i % per_200ms:
                continue
            await settle()
            a, b = stock.predict(), ours.predict()
            expected.append(probability(await a))
            got.append(probability(await b))
            if i % (per_200ms * 7) == 0:  # a committed turn: both forget their audio
                stock.flush()
                ours.flush()
    finally:
        await stock.aclose()
        await ours.aclose()
    assert len(got) >= 25
    assert np.allclose(got, expected, atol=1e-3), list(zip(expected, got, strict=True))
    assert max(expected) - min(expected) > 0.3, "the speech moved the model both ways"
    assert model.calls == len(got) == predictor.runs


async def test_the_detector_is_livekits_own_v1_mini_to_the_session(
    predictor: TurnPredictor,
) -> None:
    stock = inference.TurnDetector(version="v1-mini", unlikely_threshold=0.2)
    ours = SharedTurnDetector(unlikely_threshold=0.2, predictor=predictor)
    assert isinstance(ours, inference.TurnDetector)
    assert (
        (ours.model, ours.provider)
        == (stock.model, stock.provider)
        == (
            "turn-detector-v1-mini",
            "livekit",
        )
    )
    assert ours.describe_options() == stock.describe_options()
    for lang in (None, LanguageCode("en"), LanguageCode("fr")):
        assert await ours.unlikely_threshold(lang) == await stock.unlikely_threshold(lang)
        assert await ours.backchannel_threshold(lang) == await stock.backchannel_threshold(lang)
        assert await ours.supports_language(lang) == await stock.supports_language(lang)
    ours.update_options(unlikely_threshold=0.4)
    stock.update_options(unlikely_threshold=0.4)
    en = LanguageCode("en")
    assert await ours.unlikely_threshold(en) == await stock.unlikely_threshold(en) == 0.4
    stream = ours.stream()
    try:
        assert (stream.model, stream.provider, stream.is_fallback) == (
            "turn-detector-v1-mini",
            "livekit",
            False,
        )
        assert await stream.unlikely_threshold(en) == 0.4
        assert stream.prediction_timeout == 1.0
    finally:
        await stream.aclose()
