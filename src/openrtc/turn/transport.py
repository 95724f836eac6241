"""The transport livekit's turn stream drives, with the model call done by the predictor.

livekit's `_BaseStreamingTurnDetectorStream` owns resampling, the audio channel and the
request bookkeeping (predict supersedes, a new utterance cancels, a timeout gives up);
a transport only keeps the audio and answers requests. This one keeps the audio in a
ring, snapshots it when a request comes (the same moment livekit's local transport
reads its buffer, so the model sees the same samples) and queues it on the shared
predictor instead of a thread-pool task of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from typing import Any

from livekit import rtc

from .. import _lk
from .predictor import Request, TurnPredictor
from .ring import RecentAudio

logger = logging.getLogger("openrtc.turn")


class BatchedTurnTransport:
    """One stream's audio window and its requests on the shared predictor."""

    def __init__(self, predictor: TurnPredictor) -> None:
        self._predictor = predictor
        self._audio = RecentAudio(_lk.TURN_BUFFER_SECONDS)
        self._stream_ref: weakref.ref[Any] | None = None
        self._closed = False
        self._warned = False

    # --- livekit's transport Protocol -----------------------------------------------------
    @property
    def session_id(self) -> str | None:
        return None

    def attach(self, stream: Any) -> None:
        self._stream_ref = weakref.ref(stream)

    def detach(self) -> None:
        """The stream is closing: its queued requests are dropped, late answers ignored."""
        self._closed = True
        self._predictor.drop(self)

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._audio.push_frame(frame)

    def flush(self) -> None:
        self._audio.clear()

    def run_inference(self, request_id: str) -> None:
        if self._closed:
            return
        self._predictor.submit(
            Request(
                owner=self,
                request_id=request_id,
                pcm=self._audio.read(),
                loop=asyncio.get_running_loop(),
                context=contextvars.copy_context(),
                queued_at=time.perf_counter(),
            )
        )

    async def run(self) -> None:
        stream = self._stream()
        if stream is not None:
            await _lk.drain_turn_audio(stream)

    # --- the predictor's side -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def wants(self, request_id: str) -> bool:
        """Asked from the predictor's thread: a request id, once replaced, never returns,
        so a False here is never wrong; a True may be overtaken, as in livekit."""
        stream = self._stream()
        return stream is not None and _lk.turn_request_is_current(stream, request_id)

    def resolve(
        self, request_id: str, probability: float, seconds: float, error: BaseException | None
    ) -> None:
        if self._closed:
            return
        if error is not None and not self._warned:
            self._warned = True
            logger.warning(
                "local audio turn detector failed (%s: %s); defaulting to 1.0",
                type(error).__name__,
                error,
            )
        stream = self._stream()
        if stream is not None:
            _lk.resolve_turn_request(stream, request_id, probability, seconds)

    def _stream(self) -> Any:
        return self._stream_ref() if self._stream_ref is not None else None
