"""The end-of-turn model shared by every call in the process.

`SharedTurnDetector` is a drop-in for `livekit.agents.inference.TurnDetector(version=
"v1-mini")`: the same model, thresholds and decisions, with one thread running the model
for every call and skipping requests already superseded when their turn comes.
"""

from .detector import SharedTurnDetector
from .predictor import (
    THREAD_NAME,
    TurnPredictor,
    shared_predictor,
    shared_predictor_behind_s,
    shared_predictor_stats,
)
from .ring import RecentAudio
from .transport import BatchedTurnTransport

__all__ = [
    "THREAD_NAME",
    "BatchedTurnTransport",
    "RecentAudio",
    "SharedTurnDetector",
    "TurnPredictor",
    "shared_predictor",
    "shared_predictor_behind_s",
    "shared_predictor_stats",
]
