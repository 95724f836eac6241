"""`SharedTurnDetector`: livekit's local end-of-turn detector, served by one thread.

It is a subclass of `livekit.agents.inference.TurnDetector(version="v1-mini")`, not a
new class behind livekit's streaming Protocol: AgentSession wires the detector's metrics
by `isinstance(..., inference.TurnDetector)`, and the model name, provider, thresholds,
`update_options` and `describe_options` are then livekit's own, unchanged. Its streams
are livekit's own stream class too (predict, supersede, cancel, flush and the prediction
timeout behave exactly as stock); only the transport under them differs: a ring buffer
of the last 1.2 s instead of one shifted on every frame, and the process-wide
`TurnPredictor` instead of a thread-pool hop per request, skipping requests the stream
no longer waits for.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
    inference,
)

from .. import _lk
from .predictor import TurnPredictor, shared_predictor
from .ring import MODEL_RATE
from .transport import BatchedTurnTransport

Thresholds = float | dict[Any, float]


class SharedTurnDetector(inference.TurnDetector):
    """A drop-in for `inference.TurnDetector(version="v1-mini")`; pass it as AgentSession's
    turn detection. `predictor`: the thread that runs the model (default: the process's)."""

    def __init__(
        self,
        *,
        unlikely_threshold: NotGivenOr[Thresholds] = NOT_GIVEN,
        backchannel_threshold: NotGivenOr[Thresholds] = NOT_GIVEN,
        sample_rate: int = MODEL_RATE,
        predictor: TurnPredictor | None = None,
    ) -> None:
        _lk.check_turn_detector()
        super().__init__(
            version="v1-mini",
            unlikely_threshold=unlikely_threshold,
            backchannel_threshold=backchannel_threshold,
            sample_rate=sample_rate,
        )
        self._openrtc_predictor = predictor

    @property
    def predictor(self) -> TurnPredictor:
        return self._openrtc_predictor or shared_predictor()

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> Any:
        """livekit's turn stream over a `BatchedTurnTransport` (there is no connection, so
        `conn_options` has nothing to configure, as for the stock local model)."""
        return _lk.turn_detector_stream(self, BatchedTurnTransport(self.predictor))
