"""Simulated calls: a scripted caller driving a real `AgentSession` with no room."""

from .caller import DEFAULT_TURN_TIMEOUT, CallAborted, CallTranscript, run_simulated_call
from .latency import TURN_LATENCY, TURN_LATENCY_EDGES_MS, TurnLatencyTotals
from .media import (
    CLIP_SAMPLE_RATE,
    InputClosed,
    SimulatedAudioInput,
    SimulatedAudioOutput,
    SpeechClip,
    speech_clips,
)
from .room import SimulatedLocalParticipant, SimulatedRoom, SimulatedRoomError
from .script import DEFAULT_FRAME_MS, MODES, SIMULATED_CALL_KEY, CallMode, CallScript

__all__ = [
    "CLIP_SAMPLE_RATE",
    "DEFAULT_FRAME_MS",
    "DEFAULT_TURN_TIMEOUT",
    "MODES",
    "SIMULATED_CALL_KEY",
    "TURN_LATENCY",
    "TURN_LATENCY_EDGES_MS",
    "CallAborted",
    "CallMode",
    "CallScript",
    "CallTranscript",
    "InputClosed",
    "SimulatedAudioInput",
    "SimulatedAudioOutput",
    "SimulatedLocalParticipant",
    "SimulatedRoom",
    "SimulatedRoomError",
    "SpeechClip",
    "TurnLatencyTotals",
    "run_simulated_call",
    "speech_clips",
]
