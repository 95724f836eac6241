"""The private livekit-agents names OpenRTC uses still exist: fails loudly on upgrade."""

from __future__ import annotations

import pytest

from openrtc import _lk


def test_installed_livekit_agents_has_every_internal_we_use() -> None:
    _lk.check_internals()
    _lk.check_silero()


@pytest.mark.parametrize("version", ["1.9.0", "2.0.1", "1.7.3"])
def test_other_series_are_refused_with_the_fix(version: str) -> None:
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="livekit-agents~=1.8.0"):
        _lk.check_version(version)


def test_a_patch_release_of_the_tested_series_is_accepted() -> None:
    _lk.check_version("1.8.42")


def test_a_moved_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(_lk.AgentServer, "_get_effective_load")
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="_get_effective_load is gone"):
        _lk.check_internals()


def test_a_moved_silero_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lk, "_SILERO_VAD_PRIVATE", ("_onnx_session", "_options_moved"))
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="silero.VAD._options_moved is gone"):
        _lk.check_silero()
    _lk.check_internals()  # a worker without the shared VAD does not depend on them


def test_a_dropped_silero_option_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = (*_lk.SILERO_OPTION_FIELDS, "speech_pad_ms")
    monkeypatch.setattr(_lk, "SILERO_OPTION_FIELDS", fields)
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="_VADOptions.speech_pad_ms is gone"):
        _lk.check_silero()


def test_the_loaded_silero_model_is_reachable() -> None:
    from livekit.plugins import silero

    vad = silero.VAD.load(min_silence_duration=0.3)
    found = _lk.silero_model(vad)
    assert found is not None
    session, options = found
    assert session is not None and hasattr(session, "run")
    assert options["min_silence_duration"] == 0.3
    assert _lk.silero_model(object()) is None


def test_a_server_attribute_that_moved_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    moved = dict(_lk._SERVER_ATTRIBUTES, run=("_job_lifecycle_tasks", "_outbox"))
    monkeypatch.setattr(_lk, "_SERVER_ATTRIBUTES", moved)
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match=r"_outbox is no longer set in run\(\)"):
        _lk.check_internals()


def test_a_hot_reload_hook_call_that_moved_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_lk._HOOK_CALLS, "on_enter", "await self._agent.on_arrival()")
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="on_arrival"):
        _lk.check_internals()


def test_a_changed_connection_loop_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    async def reshaped(self: object) -> None:
        return None

    monkeypatch.setattr(_lk.AgentServer, "_connection_task", reshaped)
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="_connection_task no longer does"):
        _lk.check_internals()


def test_a_moved_assignment_table_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def reshaped(self: object, assignment: object) -> None:
        return None

    monkeypatch.setattr(_lk.AgentServer, "_handle_assignment", reshaped)
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="no longer reads _pending_assignments"):
        _lk.check_internals()


def test_a_receive_loop_that_no_longer_hands_offers_over_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def reshaped(self: object, ws: object) -> None:
        return None

    monkeypatch.setattr(_lk.AgentServer, "_run_ws", reshaped)
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="no longer hands offers"):
        _lk.check_internals()


def test_a_launch_after_assignment_that_moved_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    async def reshaped(self: object, msg: object) -> None:
        return None

    monkeypatch.setattr(_lk.AgentServer, "_answer_availability", reshaped)
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="no longer launches the assigned"):
        _lk.check_internals()


def test_the_turn_stream_internals_are_there_and_a_moved_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livekit.agents.inference.eot import base as eot_base

    _lk.check_turn_detector()

    def reshaped(self: object, request_id: str, probability: float) -> None:
        return None

    monkeypatch.setattr(eot_base._BaseStreamingTurnDetectorStream, "_resolve_prediction", reshaped)
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="--no-shared-turn-detector") as err:
        _lk.check_turn_detector()
    assert "_resolve_prediction no longer does" in str(err.value)
    _lk.check_internals()  # a worker without the shared turn detector does not depend on it


def test_a_changed_turn_transport_protocol_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lk, "TURN_TRANSPORT_MEMBERS", (*_lk.TURN_TRANSPORT_MEMBERS, "reset"))
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="turn transport Protocol has"):
        _lk.check_turn_detector()


def test_the_turn_transport_implements_livekits_protocol() -> None:
    from livekit.agents.inference.eot.base import _StreamingTurnDetectionTransport

    from openrtc.turn import BatchedTurnTransport, TurnPredictor

    transport = BatchedTurnTransport(TurnPredictor(lambda pcm: 0.5))
    assert isinstance(transport, _StreamingTurnDetectionTransport)
