"""Shipping audit records off the worker, without ever blocking the loop or a call.

Every record leaves as one JSON line, an envelope a log shipper or collector can route:
`{"openrtc_audit": 1, "worker": "<host>:<pid>:<nonce>", "record": {...}}`. `record` is
the flat record exactly as the file sink writes it (chain fields included); `worker`
names this worker process's chain for as long as it runs (a record's own `worker_id`
is the dispatch server's id, empty until the worker registers). A collector keeps one
record per (worker, record seq).

Each outlet hands its records to its own thread: `offer()` runs under the audit log's
lock and only queues or appends to the spool. A sink that raises or takes longer than
its timeout is counted by sink and reason on the audit log (`/metrics`, `openrtc top`);
when a sink starts failing, and when it recovers, an audit record says so, so the file
sink (if any) holds it too.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .spool import Batch, Spool

logger = logging.getLogger("openrtc.audit")

MARKER = "openrtc_audit"
"""The key that marks an audit line in a mixed log stream (its value is the format, 1)."""
FORMAT = 1
BATCH_LINES = 200
BATCH_BYTES = 512 * 1024
QUEUE_LINES = 10_000
"""Records an in-memory outlet holds for a slow sink before it drops (and counts) more."""
RETRY_FIRST = 0.2


def worker_identity() -> str:
    """This process's chain name: host, pid and a nonce (pids are reused after restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def envelope_line(worker: str, record: Mapping[str, Any]) -> bytes:
    """One audit record as a marked JSON line, newline included."""
    document = {MARKER: FORMAT, "worker": worker, "record": record}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8") + b"\n"


class SinkError(Exception):
    """A delivery failed; `reason` is the short label it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class LineSink(Protocol):
    """Where an outlet's thread sends lines; may block, raises SinkError on failure."""

    name: str

    def send(self, data: bytes, count: int) -> None: ...


class FailureReporter(Protocol):
    """What an outlet needs of the audit log: counting and recording its failures."""

    def count_failure(self, sink: str, reason: str) -> None: ...

    def emit(self, event: str, /, **fields: Any) -> Any: ...


@dataclasses.dataclass(frozen=True)
class FlushReport:
    """How a flush at exit went: what was delivered, what is left, how long it took."""

    sink: str
    delivered: bool
    pending_bytes: int
    seconds: float
    detail: str


class Outlet:
    """One sink behind its own thread: records go in without blocking, failures are counted."""

    def __init__(
        self,
        sink: LineSink,
        reporter: FailureReporter,
        *,
        timeout: float,
        retry_max: float,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.reporter = reporter
        self.timeout = timeout
        self.retry_max = retry_max
        self._cond = threading.Condition()
        self._closing = False
        self._failing: str | None = None
        self._failed_since = 0.0
        self._failures_in_outage = 0
        self._notes: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._thread = threading.Thread(target=self._run, name=f"audit-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- the emitting side ----------------------------------------------------------
    def offer(self, line: bytes) -> None:
        raise NotImplementedError

    def pending(self) -> bool:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        return {"failing": self._failing}

    # --- the thread -------------------------------------------------------------------
    def _run(self) -> None:
        raise NotImplementedError

    def _send(self, data: bytes, count: int) -> None:
        """Deliver once; raises SinkError, counting a slow success as a timeout too."""
        started = time.monotonic()
        try:
            self.sink.send(data, count)
        except SinkError:
            raise
        except Exception as exc:  # a sink's own bug must not end the thread
            raise SinkError("error", type(exc).__name__) from exc
        if time.monotonic() - started > self.timeout:
            self._count("slow")

    def _count(self, reason: str) -> None:
        self.reporter.count_failure(self.name, reason)

    def _failed(self, error: SinkError) -> None:
        self._count(error.reason)
        if self._failing is None:
            self._failing = error.reason
            self._failed_since = time.monotonic()
            self._failures_in_outage = 0
            logger.error("audit sink %s failing (%s): %s", self.name, error.reason, error)
            self._record("audit.sink_failed", result="failed", reason=error.reason)
        self._failures_in_outage += 1

    def _succeeded(self) -> None:
        if self._failing is not None:
            outage = time.monotonic() - self._failed_since
            logger.warning("audit sink %s recovered after %.1fs", self.name, outage)
            self._record(
                "audit.sink_recovered",
                reason=self._failing,
                failures=self._failures_in_outage,
                outage_s=round(outage, 3),
            )
            self._failing = None

    def _record(self, event: str, **fields: Any) -> None:
        """An audit record about this sink (it reaches the file sink and every other one)."""
        try:
            self.reporter.emit(event, target=self.name, **fields)
        except Exception:
            logger.exception("could not record %s for audit sink %s", event, self.name)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.retry_max, RETRY_FIRST * 2 ** min(attempt, 20)))

    def close(self, deadline: float) -> FlushReport:
        """Stop taking records; deliver what is held until `deadline` (monotonic)."""
        raise NotImplementedError


class QueuedOutlet(Outlet):
    """Lines held in memory (bounded) for a sink that needs no durability, like stdout."""

    def __init__(self, sink: LineSink, reporter: FailureReporter, **kw: Any) -> None:
        super().__init__(sink, reporter, **kw)
        self._queue: collections.deque[bytes] = collections.deque()
        self._busy = False

    def offer(self, line: bytes) -> None:
        with self._cond:
            if len(self._queue) >= QUEUE_LINES:
                dropped = True
            else:
                dropped = False
                self._queue.append(line)
                self._cond.notify()
        if dropped:
            self._count("queue_full")

    def pending(self) -> bool:
        with self._cond:
            return bool(self._queue) or self._busy

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
                lines = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH_LINES))]
                self._busy = True
            try:
                self._send(b"".join(lines), len(lines))
            except SinkError as error:
                self._failed(error)
            else:
                self._succeeded()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self, deadline: float) -> FlushReport:
        started = time.monotonic()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = sum(len(line) for line in self._queue)
        done = not self._thread.is_alive() and left == 0
        return FlushReport(
            self.name,
            done,
            left,
            time.monotonic() - started,
            "all written" if done else f"{left} bytes not written",
        )


class SpooledOutlet(Outlet):
    """Lines kept on disk until the sink acknowledges them; nothing is dropped by default.

    When the spool holds `max_bytes`, it is full: with `keep_when_full` (the refuse
    policy) records still go in, up to twice the bound to protect the disk, and the pool
    refuses new calls; otherwise new records are dropped and counted (`spool_full`).
    """

    def __init__(
        self,
        sink: LineSink,
        reporter: FailureReporter,
        spool: Spool,
        *,
        max_bytes: int,
        keep_when_full: bool,
        **kw: Any,
    ) -> None:
        super().__init__(sink, reporter, **kw)
        self.spool = spool
        self.max_bytes = max_bytes
        self.keep_when_full = keep_when_full
        self._full_noted = False
        self._attempt = 0
        self._dirty = True
        self._deadline = 0.0

    @property
    def full(self) -> bool:
        return self.spool.pending_bytes >= self.max_bytes

    def offer(self, line: bytes) -> None:
        ceiling = self.max_bytes * (2 if self.keep_when_full else 1)
        if self.spool.pending_bytes + len(line) > ceiling:
            self._count("spool_full")
            self._wake()
            return
        try:
            self.spool.append(line)
        except OSError as exc:
            self._count(f"spool_{exc.__class__.__name__}")
        self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def pending(self) -> bool:
        return self.spool.pending_bytes > 0

    def status(self) -> dict[str, Any]:
        return {
            "failing": self._failing,
            "spool_bytes": self.spool.pending_bytes,
            "spool_max_bytes": self.max_bytes,
            "spool_full": self.full,
            "slot": str(self.spool.slot),
        }

    def _note_fullness(self) -> None:
        full = self.full
        if full and not self._full_noted:
            self._full_noted = True
            policy = "refusing new calls" if self.keep_when_full else "dropping new records"
            logger.error(
                "AUDIT SPOOL FULL: %s holds %d bytes unacknowledged by %s (bound %d): %s",
                self.spool.slot,
                self.spool.pending_bytes,
                self.name,
                self.max_bytes,
                policy,
            )
            self._record(
                "audit.spool_full",
                result="full",
                spool_bytes=self.spool.pending_bytes,
                policy="refuse" if self.keep_when_full else "drop",
            )
        elif not full and self._full_noted:
            self._full_noted = False
            logger.warning("audit spool %s below its bound again", self.spool.slot)
            self._record("audit.spool_drained", spool_bytes=self.spool.pending_bytes)

    def _run(self) -> None:
        while True:
            self._note_fullness()
            with self._cond:
                self._dirty = False
            batch = self.spool.read(max_lines=BATCH_LINES, max_bytes=BATCH_BYTES)
            if not batch.lines:
                if batch.end != self.spool.position:
                    self.spool.ack(batch)
                    continue
                with self._cond:
                    if self._closing:
                        return
                    if not self._dirty:
                        self._cond.wait(1.0)
                continue
            if self._deliver(batch):
                self._attempt = 0
                continue
            delay = self._backoff(self._attempt)
            self._attempt += 1
            with self._cond:
                if self._closing and time.monotonic() >= self._deadline:
                    return
                self._cond.wait(delay)

    def _deliver(self, batch: Batch) -> bool:
        try:
            self.spool.sync()
        except OSError as exc:
            self._count(f"spool_{exc.__class__.__name__}")
        try:
            self._send(b"".join(batch.lines), len(batch.lines))
        except SinkError as error:
            self._failed(error)
            return False
        try:
            self.spool.ack(batch)
        except OSError as exc:
            self._count(f"spool_{exc.__class__.__name__}")
            return False
        self._succeeded()
        return True

    def close(self, deadline: float) -> FlushReport:
        started = time.monotonic()
        with self._cond:
            self._deadline = deadline
            self._closing = True
            self._cond.notify_all()
        while self._thread.is_alive() and time.monotonic() < deadline:
            if not self.pending():
                break
            self._thread.join(min(0.05, max(0.0, deadline - time.monotonic())))
        with self._cond:
            self._cond.notify_all()
        self._thread.join(min(1.0, max(0.0, deadline - time.monotonic())) + 0.01)
        left = self.spool.pending_bytes
        seconds = time.monotonic() - started
        if left == 0:
            detail = "spool empty: every record acknowledged"
        else:
            detail = (
                f"{left} bytes unacknowledged stay in {self.spool.slot}; the next worker "
                "to take this slot resends them"
            )
        if not self._thread.is_alive():
            self.spool.close()
        return FlushReport(self.name, left == 0, left, seconds, detail)


class AuditSinks:
    """The outlets of one audit log, fed by its fan-out, with this worker's chain name."""

    def __init__(self, worker: str | None = None) -> None:
        self.worker = worker or worker_identity()
        self.outlets: list[Outlet] = []
        self._closed = False

    def add(self, outlet: Outlet) -> None:
        self.outlets.append(outlet)

    def attach(self, add_fanout: Callable[[Callable[[dict[str, Any]], None]], None]) -> None:
        """Receive every later record (through the log's `add_fanout`); start the threads."""
        add_fanout(self)
        for outlet in self.outlets:
            outlet.start()

    def __call__(self, record: Mapping[str, Any]) -> None:
        line = envelope_line(self.worker, record)
        for outlet in self.outlets:
            outlet.offer(line)

    def backlog(self) -> str | None:
        """Why new calls should wait (a full spool under the refuse policy), else None."""
        for outlet in self.outlets:
            if isinstance(outlet, SpooledOutlet) and outlet.keep_when_full and outlet.full:
                mib = outlet.spool.pending_bytes / 2**20
                return (
                    f"audit spool of sink {outlet.name} holds {mib:.1f} MiB unacknowledged "
                    f"(bound {outlet.max_bytes / 2**20:.1f} MiB)"
                )
        return None

    def status(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "sinks": {outlet.name: outlet.status() for outlet in self.outlets},
        }

    def close(self, timeout: float) -> list[FlushReport]:
        """Deliver what every outlet holds within `timeout` seconds (blocking; a thread)."""
        deadline = time.monotonic() + timeout
        self._closed = True
        return [outlet.close(deadline) for outlet in self.outlets]
