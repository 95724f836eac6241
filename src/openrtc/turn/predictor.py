"""One thread that runs the end-of-turn model for every call in the process.

livekit's local transport sends each request to the default thread pool (a hop, a task
and a future per request) and runs it even when the caller spoke again before it
started. The model takes one clip per call and releases the GIL, so nothing is gained
by running requests side by side on a 2-core box; what is gained is not running the
ones nobody waits for any more. Here requests wait in one queue, in the order they
came; right before a request runs its stream is asked whether it still wants it
(superseded, cancelled or timed out: skipped, counted), and finished results are handed
to each event loop in groups, one `call_soon_threadsafe` per loop per group.

The thread starts on the first request and again in a forked child (a worker forked
after loading its models has no threads); a failure it cannot pin on one request is
logged and the thread carries on.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .ring import I16

logger = logging.getLogger("openrtc.turn")

GROUP_HOLD_S = 0.05
"""A finished result waits at most this long for others to share its hand-over (it goes
at once when the queue is empty, or when one more run would keep it longer). livekit asks
for a prediction after 200 ms of silence and waits for it only at the end of speech, a
few hundred ms later, so this wait is normally hidden."""
LATE_WARNING_S = 0.3
"""A request that waited longer than this for the model is logged (at most every
`WARN_EVERY_S`): livekit gives up on a prediction after 1 s and commits without it."""
WARN_EVERY_S = 10.0
THREAD_NAME = "openrtc-turn"
"""The shared predictor's thread (ops.thread_cpu reads its CPU by this name)."""
NICE = 10
"""How much nicer than the process the model thread runs (Linux, where niceness is per
thread and the threads the native model starts inherit it). A prediction has slack: it
is asked for after 200 ms of silence and awaited only at the end of speech. The VAD and
the event loop have none: when the box is short of CPU they go first."""


def lower_thread_priority(by: int) -> bool:
    """Make the calling thread `by` nicer (Linux only); whether it took."""
    if by <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError as e:
        logger.debug("could not lower the end-of-turn thread's priority: %s", e)
        return False
    return True


class Requester(Protocol):
    """What asks for predictions: a stream's transport."""

    @property
    def closed(self) -> bool: ...

    def wants(self, request_id: str) -> bool:
        """Still waiting for this request (it is the stream's current one)."""
        ...

    def resolve(
        self, request_id: str, probability: float, seconds: float, error: BaseException | None
    ) -> None:
        """Called on the request's event loop with the model's answer."""
        ...


@dataclass(eq=False)
class Request:
    owner: Requester
    request_id: str
    pcm: I16
    loop: asyncio.AbstractEventLoop
    context: contextvars.Context
    queued_at: float


_Result = tuple[Request, float, float, "BaseException | None"]


def _native_predict() -> Callable[[I16], float]:
    from livekit.local_inference import EOT

    return EOT().predict  # type: ignore[no-any-return]


class TurnPredictor:
    """The queue and the thread; `predict` is the model call (default: livekit's EOT)."""

    def __init__(
        self,
        predict: Callable[[I16], float] | None = None,
        *,
        hold_s: float = GROUP_HOLD_S,
        name: str = THREAD_NAME,
        nice: int = NICE,
    ) -> None:
        self._predict = predict
        self._hold_s = hold_s
        self._nice = nice
        self._name = name
        self._setup()
        self.runs = 0
        """Requests the model ran."""
        self.skipped = 0
        """Requests not run: their stream had superseded or cancelled them."""
        self.dropped = 0
        """Requests not run: their stream closed while they waited."""
        self.failures = 0
        """Runs that raised; each answered 1.0."""
        self.stale = 0
        """Runs whose answer came after the stream had moved on (the caller spoke again)."""
        self.deliveries = 0
        """Hand-overs to event loops (each carries one or more results)."""
        self._warned_at = -WARN_EVERY_S
        ref = weakref.ref(self)

        def _after_fork() -> None:
            predictor = ref()
            if predictor is not None:
                predictor._setup()

        os.register_at_fork(after_in_child=_after_fork)

    def _setup(self) -> None:
        """Fresh lock, queue and no thread (at start, and in a forked child)."""
        self._cond = threading.Condition()
        self._queue: deque[Request] = deque()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._running_since: float | None = None
        """When the request the model is running was queued (None between runs)."""

    # --- the event loop's side ------------------------------------------------------------
    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the end-of-turn predictor is closed")
            self._queue.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def drop(self, owner: Requester) -> int:
        """Forget every queued request of `owner` (its stream closed); how many."""
        with self._cond:
            kept = deque(r for r in self._queue if r.owner is not owner)
            n = len(self._queue) - len(kept)
            self._queue = kept
            self.dropped += n
        return n

    @property
    def queued(self) -> int:
        return len(self._queue)

    def behind_s(self, now: float | None = None) -> float:
        """How long the oldest request not yet answered has waited (the one running
        included), 0 when none waits. The thread runs nicer than the calls, so this is
        what grows first when the box has no CPU left over."""
        now = time.perf_counter() if now is None else now
        with self._cond:
            oldest = self._running_since
            if self._queue:
                head = self._queue[0].queued_at
                oldest = head if oldest is None else min(oldest, head)
        return max(0.0, now - oldest) if oldest is not None else 0.0

    def stats(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "failures": self.failures,
            "stale": self.stale,
            "deliveries": self.deliveries,
            "queued": self.queued,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread once the queue is empty (a process-wide one is never closed)."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the thread -----------------------------------------------------------------------
    def _serve(self) -> None:
        lower_thread_priority(self._nice)
        while True:
            try:
                self._serve_until_closed()
                return
            except BaseException:  # the thread must outlive any one failure
                logger.exception("the end-of-turn predictor failed; it carries on")
                time.sleep(0.1)

    def _serve_until_closed(self) -> None:
        predict = self._load()
        held: list[_Result] = []
        held_since = 0.0
        while True:
            request = self._next(wait=not held)
            if request is None:
                if held:
                    self._hand_over(held)
                    held = []
                    continue
                return
            if request.owner.closed:
                with self._cond:
                    self.dropped += 1
                continue
            if not request.owner.wants(request.request_id):
                self.skipped += 1
                continue
            self._note_wait(time.perf_counter() - request.queued_at)
            error: BaseException | None = None
            started = time.perf_counter()
            self._running_since = request.queued_at
            try:
                probability = float(predict(request.pcm))
            except BaseException as e:  # answered 1.0, as livekit does
                probability, error = 1.0, e
                self.failures += 1
            finally:
                self._running_since = None
            self.runs += 1
            now = time.perf_counter()
            run_s = now - started
            if not held:
                held_since = now
            held.append((request, probability, now - request.queued_at, error))
            if now + run_s - held_since > self._hold_s:
                self._hand_over(held)
                held = []

    def _note_wait(self, waited: float) -> None:
        now = time.perf_counter()
        if waited > LATE_WARNING_S and now - self._warned_at > WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "the end-of-turn model is %.0f ms behind (%d requests waiting): this worker "
                "has more calls than its CPU can serve; lower max_concurrent_sessions",
                1000 * waited,
                len(self._queue),
            )

    def _load(self) -> Callable[[I16], float]:
        if self._predict is not None:
            return self._predict
        try:
            return _native_predict()
        except Exception as e:  # every request is answered 1.0 with the reason
            failed = e

            def unavailable(pcm: I16) -> float:
                raise RuntimeError(f"the end-of-turn model could not be loaded: {failed}")

            return unavailable

    def _next(self, *, wait: bool) -> Request | None:
        """The oldest queued request; None when there is none and we must not wait (or
        the predictor is closing)."""
        with self._cond:
            while not self._queue:
                if not wait or self._closing:
                    return None
                self._cond.wait()
            return self._queue.popleft()

    def _hand_over(self, results: list[_Result]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
        for result in results:
            by_loop.setdefault(result[0].loop, []).append(result)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._deliver, group)
                self.deliveries += 1
            except RuntimeError:  # that loop is closed: nobody is left to answer
                continue

    def _deliver(self, group: list[_Result]) -> None:
        """On the requests' loop: hand each stream its answer, in the call's context."""
        for request, probability, seconds, error in group:
            if not request.owner.wants(request.request_id):
                self.stale += 1
                continue
            try:
                request.context.run(
                    request.owner.resolve, request.request_id, probability, seconds, error
                )
            except Exception:
                logger.exception("delivering an end-of-turn prediction failed")


_shared: TurnPredictor | None = None
_shared_lock = threading.Lock()


def shared_predictor() -> TurnPredictor:
    """The process-wide predictor every `SharedTurnDetector` uses unless given another."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TurnPredictor()
        return _shared


def shared_predictor_stats() -> dict[str, int] | None:
    """Its counters, or None while no shared detector was made in this process."""
    return _shared.stats() if _shared is not None else None


def shared_predictor_behind_s() -> float:
    """Its `behind_s()`, or 0 while no shared detector was made in this process."""
    return _shared.behind_s() if _shared is not None else 0.0
