"""CallScript: validation with one-sentence errors, and the metadata round trip."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from openrtc.simulation import CallScript


def test_round_trip_through_json_metadata() -> None:
    script = CallScript(
        turns=("hello", "book a table"),
        mode="audio",
        pause_s=0.5,
        hold_s=2,
        max_duration_s=30.0,
        expect_greeting=True,
        frame_ms=50,
        noise_dbfs=-60.0,
    )
    metadata = json.dumps({"simulated_call": script.to_dict(), "tenant": "acme"})
    parsed = CallScript.from_dict(json.loads(metadata)["simulated_call"])
    assert parsed == script
    assert parsed.turns == ("hello", "book a table")


def test_defaults_fill_missing_fields() -> None:
    script = CallScript.from_dict({"turns": ["hi"]})
    assert script == CallScript(turns=("hi",))
    assert (script.mode, script.pause_s, script.hold_s) == ("text", 0.2, 0.0)
    assert script.max_duration_s is None and script.expect_greeting is False
    assert script.frame_ms == 20
    assert script.noise_dbfs is None


def test_turns_given_as_list_are_stored_as_tuple() -> None:
    script = CallScript(turns=["a", "b"])  # type: ignore[arg-type]
    assert script.turns == ("a", "b")
    assert hash(script)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"turns": ["hi"], "mode": "video"}, "mode must be 'text' or 'audio'"),
        ({"turns": ["hi"], "pause_s": -0.1}, "pause_s must be 0 seconds or more"),
        ({"turns": ["hi"], "hold_s": -1}, "hold_s must be 0 seconds or more"),
        ({"turns": ["hi"], "pause_s": "fast"}, "pause_s must be a number of seconds"),
        ({"turns": ["hi"], "pause_s": True}, "pause_s must be a number of seconds"),
        ({"turns": ["hi"], "hold_s": math.nan}, "hold_s must be a number of seconds"),
        ({"turns": ["hi"], "max_duration_s": 0}, "max_duration_s must be greater than 0"),
        ({"turns": []}, "turns must hold at least one thing"),
        ({"turns": "hello"}, "turns must be a list of strings"),
        ({"turns": ["hi", "  "]}, "turns[1] must be a non-blank string"),
        ({"turns": ["hi", 3]}, "turns[1] must be a non-blank string"),
        ({"mode": "text"}, "a call script needs 'turns'"),
        ({"turns": ["hi"], "speed": 2}, "unknown call script field(s) speed"),
        ({"turns": ["hi"], "expect_greeting": "yes"}, "expect_greeting must be true or false"),
        ({"turns": ["hi"], "noise_dbfs": -10}, "noise_dbfs must be null or a level from -90"),
        ({"turns": ["hi"], "noise_dbfs": "loud"}, "noise_dbfs must be null or a level"),
        ({"turns": ["hi"], "noise_dbfs": True}, "noise_dbfs must be null or a level"),
        ({"turns": ["hi"], "noise_dbfs": math.nan}, "noise_dbfs must be null or a level"),
        (["hi"], "a call script must be a JSON object"),
        ({"turns": ["hi"], "frame_ms": 5}, "frame_ms must be a whole number of ms from 10"),
        ({"turns": ["hi"], "frame_ms": 20.5}, "frame_ms must be a whole number of ms"),
        ({"turns": ["hi"], "frame_ms": True}, "frame_ms must be a whole number of ms"),
        ({"turns": ["hi"], "frame_ms": 10_000}, "frame_ms must be a whole number of ms"),
    ],
)
def test_bad_scripts_raise_value_error(data: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        CallScript.from_dict(data)
    assert message in str(info.value)
    assert str(info.value).count(". ") == 0, "the message is one sentence"


def test_constructor_validates_too() -> None:
    with pytest.raises(ValueError, match="at least one thing"):
        CallScript(turns=())
    with pytest.raises(ValueError, match="mode must be"):
        CallScript(turns=("hi",), mode="video")  # type: ignore[arg-type]
