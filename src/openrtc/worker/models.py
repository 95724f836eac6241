"""The heavy models every call shares, loaded once per worker process."""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from livekit.agents import inference
from livekit.local_inference import init_eot
from livekit.plugins import silero  # plugins must be imported on the main thread

from ..config import VADRuntime

logger = logging.getLogger("openrtc.models")


@dataclass(frozen=True)
class SharedModels:
    """Silero VAD and the end-of-turn detector, shared by every session in the process."""

    vad: Any
    turn_detector: Any
    load_seconds: float


_lock = threading.Lock()
_loaded: SharedModels | None = None
load_count = 0
"""How many times the models were actually loaded in this process (1 after prewarm)."""


def shared_models() -> SharedModels:
    """Load the models on first use and return the same objects ever after."""
    global _loaded, load_count
    with _lock:
        if _loaded is not None:
            return _loaded
        t0 = time.perf_counter()
        vad = silero.VAD.load()
        init_eot()
        turn_detector = inference.TurnDetector(version="v1-mini")
        _loaded = SharedModels(vad, turn_detector, time.perf_counter() - t0)
        load_count += 1
        # Everything loaded so far (livekit, onnxruntime, the models) lives as long as the
        # process. Freezing it keeps every later full garbage collection from rescanning
        # ~150k objects: that scan alone stalled the event loop ~36 ms per collection.
        gc.collect()
        gc.freeze()
        logger.info("loaded shared VAD and end-of-turn model in %.2fs", _loaded.load_seconds)
        return _loaded


_shared_vads: dict[VADRuntime, Any] = {}


def shared_vad(runtime: VADRuntime = "auto") -> Any:
    """The process-wide batched VAD (`openrtc.vad.SharedVAD`) over the loaded Silero model.

    It reuses the Silero model `shared_models()` loaded, so it costs no extra load.
    Give each session `shared_vad().for_session()`: the same batcher, its own metrics.
    `runtime` is `Runtime.vad_runtime`; one shared VAD per runtime asked for.
    """
    from ..vad import SharedVAD

    loaded = shared_models()
    with _lock:
        if runtime not in _shared_vads:
            _shared_vads[runtime] = SharedVAD.from_silero(loaded.vad, runtime=runtime)
        return _shared_vads[runtime]


_shared_turn_detector: Any = None


def shared_turn_detector() -> Any:
    """The process-wide `openrtc.turn.SharedTurnDetector` (livekit's v1-mini model, run
    by one thread for every call); the native model is the one `shared_models()` loaded.

    Raises `UnsupportedLiveKitVersion` when livekit's turn stream changed shape.
    """
    global _shared_turn_detector
    from ..turn import SharedTurnDetector

    shared_models()
    with _lock:
        if _shared_turn_detector is None:
            _shared_turn_detector = SharedTurnDetector()
        return _shared_turn_detector


def forget_loaded_models() -> None:
    """Drop the memoized models so the next `shared_models()` loads them again.

    For tests that count real loads; a worker never calls it. Sessions already holding
    the old objects keep them.
    """
    global _loaded, _shared_turn_detector
    with _lock:
        _loaded = None
        _shared_vads.clear()
        _shared_turn_detector = None
