"""The heavy models every call shares, loaded once per worker process."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from livekit.agents import inference
from livekit.local_inference import init_eot
from livekit.plugins import silero  # plugins must be imported on the main thread

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
        logger.info("loaded shared VAD and end-of-turn model in %.2fs", _loaded.load_seconds)
        return _loaded
