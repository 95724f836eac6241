"""The stock Silero VAD and a SharedVAD over the same loaded model, for comparing them."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.plugins import silero

from openrtc.vad import SharedVAD


@pytest.fixture(scope="module")
def stock() -> Any:
    return silero.VAD.load()


@pytest.fixture
def shared(stock: Any) -> SharedVAD:
    return SharedVAD.from_silero(stock)
