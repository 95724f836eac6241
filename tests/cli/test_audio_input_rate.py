"""`--audio-input-rate`: the rate a call's audio is asked of the room at (a typo on the
command line: tests/cli/test_operator_mistakes.py)."""

from __future__ import annotations

import pytest

from openrtc.config import AUDIO_INPUT_RATES, PoolConfig, Runtime
from openrtc.errors import ConfigError


def test_the_default_is_the_models_rate_and_each_listed_rate_is_taken() -> None:
    assert Runtime().audio_input_rate == 16000
    for rate in AUDIO_INPUT_RATES:
        assert Runtime(audio_input_rate=rate).audio_input_rate == rate
    assert Runtime(audio_input_rate="24000").audio_input_rate == 24000  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 1600, 22050, -16000, True, "fast", 16000.5])
def test_a_rate_not_listed_is_refused_naming_the_flag_and_the_variable(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        Runtime(audio_input_rate=bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert "--audio-input-rate" in message and "OPENRTC_AUDIO_INPUT_RATE" in message
    assert "8000, 16000, 24000" in message and "\n" not in message


def test_the_variable_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENRTC_AUDIO_INPUT_RATE", "48000")
    assert PoolConfig.from_env().runtime.audio_input_rate == 48000
