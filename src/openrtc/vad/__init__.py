"""A shared, batched Silero VAD for many calls in one process.

`SharedVAD` is a drop-in `livekit.agents.vad.VAD` (pass it as `AgentSession(vad=...)`):
the same events, fields and decisions as `livekit.plugins.silero.VAD`, but every stream on
an event loop is decided in one pass per tick (livekit's native Silero on the loop, or one
batched ONNX call on a thread) instead of one call, one thread hop and a few task
wake-ups per stream per 32 ms window.
"""

from .batcher import THREAD_NAME, VADBatcher
from .options import VADOptions
from .stream import BatchedVADStream
from .vad import DEFAULT_BATCH_INTERVAL, SharedVAD, batchers_of

__all__ = [
    "DEFAULT_BATCH_INTERVAL",
    "THREAD_NAME",
    "BatchedVADStream",
    "SharedVAD",
    "VADBatcher",
    "VADOptions",
    "batchers_of",
]
