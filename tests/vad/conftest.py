"""The stock Silero VAD and a SharedVAD over the same loaded model, for comparing them."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.plugins import silero
from livekit.plugins.silero import onnx_model

from openrtc.vad import SharedVAD


@pytest.fixture(scope="module")
def session() -> Any:
    """The bundled Silero model's ONNX session."""
    return onnx_model.new_inference_session(True)


@pytest.fixture(scope="module")
def stock() -> Any:
    return silero.VAD.load()


@pytest.fixture(params=["native", "onnx"])
def shared(stock: Any, request: pytest.FixtureRequest) -> SharedVAD:
    """Both runtimes: livekit's native Silero (the default here) and the batched ONNX."""
    vad = SharedVAD.from_silero(stock, runtime=request.param)
    assert vad.runtime == request.param
    return vad
