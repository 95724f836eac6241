"""`SharedVAD`: a drop-in `livekit.agents.vad.VAD` whose streams share one batched model.

Pass it where a Silero VAD goes (`AgentSession(vad=...)`). Every stream it opens on an
event loop is served by that loop's one `VADBatcher`, which runs all due windows in one
hop to its model thread per tick: through livekit's native Silero when that answers like
the loaded model (the bundled one at 16 kHz; about a third of the CPU), else through one
batched ONNX call. `for_session()` gives each call its own view of the same
engine, so a session hears only its own streams' VAD metrics (sessions subscribe to their
VAD's "metrics_collected"; with one VAD object for all, every session would get every
stream's metrics).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import weakref
from pathlib import Path
from typing import Any, Literal

from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.vad import VAD, VADCapabilities

from .. import _lk
from .batcher import VADBatcher
from .model import BatchModel, WindowModel, check_batching
from .native import NativeModel, answers_like, available
from .options import VADOptions
from .stream import BatchedVADStream

DEFAULT_BATCH_INTERVAL = 0.032
"""Seconds between batches while windows are due: the most a window waits for its batch."""
UPDATE_INTERVAL = 0.032
Runtime = Literal["auto", "native", "onnx"]
"""Where windows run: livekit's native Silero, the ONNX session, or native when it
answers like the session's model (the default)."""


_engines: weakref.WeakSet[_Engine] = weakref.WeakSet()
_engines_lock = threading.Lock()


def batchers_of(loop: asyncio.AbstractEventLoop) -> list[VADBatcher]:
    """Every batcher serving `loop`, of every shared VAD loaded in this process."""
    with _engines_lock:
        engines = list(_engines)
    return [b for e in engines if (b := e.existing_batcher(loop)) is not None]


class _Engine:
    """The loaded model and one batcher per event loop that uses it."""

    def __init__(
        self, session: Any, sample_rate: int, interval: float, runtime: Runtime = "auto"
    ) -> None:
        if not interval > 0:
            raise ValueError(
                f"batch_interval must be a positive number of seconds, got {interval}."
            )
        if runtime not in ("auto", "native", "onnx"):
            raise ValueError(f"runtime is 'auto', 'native' or 'onnx', not {runtime!r}.")
        self.session = session
        self.sample_rate = sample_rate
        self.interval = interval
        check_batching(BatchModel(session, sample_rate, capacity=8))
        self.native = runtime != "onnx" and (
            sample_rate == NativeModel.SAMPLE_RATE
            and available()
            and answers_like(BatchModel(session, sample_rate, capacity=2), NativeModel())
        )
        """Whether streams run on livekit's native Silero instead of the ONNX session."""
        if runtime == "native" and not self.native:
            raise ValueError(
                "runtime='native' needs livekit-local-inference, 16 kHz and the bundled "
                "Silero model; this model answers differently. Use runtime='auto'."
            )
        self._lock = threading.Lock()
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, VADBatcher] = (
            weakref.WeakKeyDictionary()
        )
        with _engines_lock:
            _engines.add(self)

    def existing_batcher(self, loop: asyncio.AbstractEventLoop) -> VADBatcher | None:
        with self._lock:
            return self._batchers.get(loop)

    def batcher(self, loop: asyncio.AbstractEventLoop) -> VADBatcher:
        with self._lock:
            batcher = self._batchers.get(loop)
            if batcher is None:
                model: WindowModel = (
                    NativeModel() if self.native else BatchModel(self.session, self.sample_rate)
                )
                batcher = self._batchers[loop] = VADBatcher(model, interval=self.interval)
            return batcher


class SharedVAD(VAD):
    """Silero VAD for many concurrent calls: same events as `silero.VAD`, batched model."""

    def __init__(
        self,
        session: Any,
        *,
        options: VADOptions | None = None,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        runtime: Runtime = "auto",
        _engine: _Engine | None = None,
    ) -> None:
        super().__init__(capabilities=VADCapabilities(update_interval=UPDATE_INTERVAL))
        self.options = options if options is not None else VADOptions()
        self._engine = _engine or _Engine(
            session, self.options.sample_rate, batch_interval, runtime
        )
        self._streams: weakref.WeakSet[BatchedVADStream] = weakref.WeakSet()

    @classmethod
    def load(
        cls,
        *,
        min_speech_duration: float = 0.05,
        min_silence_duration: float = 0.55,
        prefix_padding_duration: float = 0.5,
        max_buffered_speech: float = 60.0,
        activation_threshold: float = 0.5,
        deactivation_threshold: float | None = None,
        sample_rate: int = 16000,
        force_cpu: bool = True,
        onnx_file_path: Path | str | None = None,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        runtime: Runtime = "auto",
    ) -> SharedVAD:
        """Load the Silero model bundled with livekit-plugins-silero (options as stock)."""
        from livekit.plugins.silero import onnx_model

        options = VADOptions(
            min_speech_duration=min_speech_duration,
            min_silence_duration=min_silence_duration,
            prefix_padding_duration=prefix_padding_duration,
            max_buffered_speech=max_buffered_speech,
            activation_threshold=activation_threshold,
            deactivation_threshold=deactivation_threshold,
            sample_rate=sample_rate,
        )
        session = onnx_model.new_inference_session(force_cpu, onnx_file_path=onnx_file_path)
        return cls(session, options=options, batch_interval=batch_interval, runtime=runtime)

    @classmethod
    def from_silero(
        cls,
        vad: Any,
        *,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        runtime: Runtime = "auto",
    ) -> SharedVAD:
        """Batch over an already loaded `silero.VAD`: its ONNX session and options, no reload."""
        found = _lk.silero_model(vad)
        if found is None:
            raise TypeError(
                f"cannot reuse {type(vad).__name__}'s model: expected a livekit-plugins-silero "
                "VAD; load one with SharedVAD.load() instead."
            )
        session, fields = found
        options = VADOptions(**fields)
        return cls(session, options=options, batch_interval=batch_interval, runtime=runtime)

    def for_session(self) -> SharedVAD:
        """A view for one call: the same batched model, its own options and listeners."""
        return SharedVAD(None, options=dataclasses.replace(self.options), _engine=self._engine)

    @property
    def model(self) -> str:
        return "silero"

    @property
    def provider(self) -> str:
        return "livekit-local-inference" if self._engine.native else "ONNX"

    @property
    def min_silence_duration(self) -> float:
        return self.options.min_silence_duration

    @property
    def runtime(self) -> Literal["native", "onnx"]:
        """Where this VAD's windows run."""
        return "native" if self._engine.native else "onnx"

    @property
    def batch_interval(self) -> float:
        return self._engine.interval

    def batcher(self, loop: asyncio.AbstractEventLoop | None = None) -> VADBatcher:
        """The batcher serving `loop` (default: the running one); its `stats()` show load."""
        return self._engine.batcher(loop or asyncio.get_running_loop())

    def stream(self) -> BatchedVADStream:
        stream = BatchedVADStream(self, self.options, self.batcher())
        self._streams.add(stream)
        return stream

    def update_options(
        self,
        *,
        min_speech_duration: NotGivenOr[float] = NOT_GIVEN,
        min_silence_duration: NotGivenOr[float] = NOT_GIVEN,
        prefix_padding_duration: NotGivenOr[float] = NOT_GIVEN,
        max_buffered_speech: NotGivenOr[float] = NOT_GIVEN,
        activation_threshold: NotGivenOr[float] = NOT_GIVEN,
        deactivation_threshold: NotGivenOr[float] = NOT_GIVEN,
    ) -> None:
        """Change options for this VAD and its open streams, as `silero.VAD` does."""
        before = self.options.apply(
            min_speech_duration=min_speech_duration,
            min_silence_duration=min_silence_duration,
            prefix_padding_duration=prefix_padding_duration,
            max_buffered_speech=max_buffered_speech,
            activation_threshold=activation_threshold,
            deactivation_threshold=deactivation_threshold,
        )
        for stream in list(self._streams):
            stream.options_changed(before)
