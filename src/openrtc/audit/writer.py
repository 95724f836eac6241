"""Writing audit events: to the log, a callable, and (from a writer thread) a sealed file.

`emit` seals and numbers a record under a lock and hands it on at once: the callable
sink and the logger get it on the caller's thread, the file (and any output attached
later with `attach`) get it from one writer thread, in batches, so a slow disk never
stalls the worker's event loop.

Durability (`durability`): "batch" (default) syncs each batch to disk before the head
moves, so after a crash at most the records emitted in the last few milliseconds are
lost and `openrtc audit verify` names the first uncovered seq; "os" leaves syncing to
the operating system (faster; a power loss can lose more). `flush()` waits until
everything emitted so far is written; `close()` flushes and releases the file.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from ..keys import KeyRing
from .callable_sink import CallableSink
from .event import (
    GENESIS_HASH,
    AuditEvent,
    _check_field_names,
    _json_safe,
    cap_value,
    record_hash,
    record_mac,
)
from .file import AuditFile
from .volume import RefusalWindows, Repeats

_LOGGER_NAME = "openrtc.audit"
_errors = logging.getLogger("openrtc")

Durability = Literal["batch", "os"]
DURABILITIES: tuple[Durability, ...] = ("batch", "os")

Output = Callable[[Sequence[AuditEvent]], None]
"""Something fed batches of records, in seq order, from the writer thread."""

_open_logs: weakref.WeakSet[AuditLog] = weakref.WeakSet()


@atexit.register
def _close_open_logs() -> None:
    for log in list(_open_logs):
        log.close()


class AuditLog:
    """Emit audit events to a logger, a callable and/or an append-only JSON Lines file.

    With no `sink` and no `path`, each event is one JSON line on the `openrtc.audit`
    logger at INFO; passing `logger` turns the logger sink on alongside the others.
    With `keys`, each record is sealed with HMAC-SHA256 under the first key (its `kid`
    is recorded), so the chain cannot be rebuilt without the key; without keys it is a
    plain sha256 chain. The file continues the seq and chain of the records already in
    it; one process may write a file at a time. After each batch the head file
    (`<log>.head`) gets the new last seq and hash (sealed with the key too).
    `emit` is thread-safe. Call it from threads or asyncio callbacks (including
    `loop.add_signal_handler`), not from a raw `signal.signal` handler, which can
    interrupt an emit already running on the same thread. The callable sink gets the
    records in seq order on a thread of its own (`flush()` waits for it), so a sink that
    is slow, hangs or raises never holds up `emit`, the event loop or a call.
    """

    def __init__(
        self,
        worker_id: str = "",
        version: str = "",
        sink: Callable[[AuditEvent], None] | None = None,
        path: str | os.PathLike[str] | None = None,
        logger: logging.Logger | None = None,
        *,
        history: int = 1000,
        keys: KeyRing | None = None,
        durability: Durability = "batch",
        refusal_interval_s: float = 10.0,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}; pass a positive size")
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}")
        self.worker_id = worker_id
        self.version = version
        self.sink_failures = 0
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()
        """Sink failures by (sink, reason); `sink_failures` is their total."""
        self._failures_lock = threading.Lock()
        self._fanout: list[Callable[[dict[str, Any]], None]] = []
        self._sink = None if sink is None else CallableSink(sink, self)
        """The user's callable, fed from its own thread so it never holds up emit()."""
        self._keys = keys
        self._logger: logging.Logger | None = logger
        if logger is None and sink is None and path is None:
            self._logger = logging.getLogger(_LOGGER_NAME)
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._recent: collections.deque[AuditEvent] = collections.deque(maxlen=history)
        self._seq = 0
        self._last_hash = GENESIS_HASH
        self._refusals = RefusalWindows(refusal_interval_s)
        self._file: AuditFile | None = None
        self._path: Path | None = None
        self._outputs: list[tuple[str, Output]] = []
        self._cond = threading.Condition()
        self._queue: collections.deque[AuditEvent] = collections.deque()
        self._queued_seq = 0
        self._written_seq = 0
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        if path is not None:
            self._open_file(Path(path), durability)

    @property
    def path(self) -> Path | None:
        """The audit file, if a file sink is configured."""
        return self._path

    @property
    def keyed(self) -> bool:
        """True when records are sealed with an audit key (forgery-evident)."""
        return self._keys is not None

    @property
    def last_seq(self) -> int:
        """Seq of the most recent event (0 before the first)."""
        return self._seq

    @property
    def last_hash(self) -> str:
        """Hash of the most recent event (`GENESIS_HASH` before the first)."""
        return self._last_hash

    def _open_file(self, path: Path, durability: Durability) -> None:
        file = AuditFile(path, self._keys, sync=durability == "batch")
        if file.resume is not None:
            self._seq = file.resume.seq
            self._last_hash = file.resume.hash
            self._queued_seq = self._written_seq = self._seq
        self._file = file
        self._path = path
        if self._keys is None:
            _errors.warning(
                "audit file %s is a plain sha256 chain: it shows accidents, not forgery; "
                "set OPENRTC_AUDIT_KEY_FILE to seal it",
                path,
            )
        self._start_thread()

    def attach(self, output: Output, name: str = "output") -> None:
        """Feed `output` every later record, in seq-ordered batches, from the writer thread.

        A failing output is counted in `sink_failures` and logged, never fatal.
        """
        with self._cond:
            self._outputs.append((name, output))
        self._start_thread()

    def _start_thread(self) -> None:
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="openrtc-audit-writer", daemon=True
            )
            self._thread.start()
        _open_logs.add(self)

    def busy(self) -> bool:
        """True while some thread is writing an event (a signal may have interrupted it)."""
        return self._lock.locked()

    def emit(
        self,
        event: str,
        /,
        *,
        actor: str = "system",
        target: str = "",
        result: str = "ok",
        version: str | None = None,
        **fields: Any,
    ) -> AuditEvent:
        """Record one event and deliver it to every sink; a failing sink never raises here.

        Field values (and actor and target) are capped in length. Raises ValueError
        only for caller mistakes: an empty event name or an extra field that would
        shadow a built-in key.
        """
        if not isinstance(event, str) or not event:
            raise ValueError("audit event name must be a non-empty string like 'worker.started'")
        _check_field_names(fields)
        extra = _json_safe(fields)
        with self._lock:
            seq = self._seq + 1
            kid = None if self._keys is None else self._keys.signing[0]
            unsigned = AuditEvent(
                seq=seq,
                timestamp=time.time(),
                event=cap_value(event),
                actor=cap_value(str(actor)),
                target=cap_value(str(target)),
                result=cap_value(str(result)),
                version=cap_value(self.version if version is None else version),
                worker_id=cap_value(self.worker_id),
                host=self._host,
                fields=extra,
                prev_hash=self._last_hash,
                hash="",
                kid=kid,
            )
            record = unsigned.to_dict()
            seal = (
                record_hash(record)
                if self._keys is None
                else record_mac(record, self._keys.signing[1])
            )
            emitted = dataclasses.replace(unsigned, hash=seal)
            self._seq = seq
            self._last_hash = emitted.hash
            self._recent.append(emitted)
            self._enqueue(emitted)
            if self._sink is not None:
                self._sink.offer(emitted)
            if self._logger is not None:
                self._deliver(emitted, self._log_event, "logger")
            if self._fanout:
                flat = emitted.to_dict()
                for deliver in self._fanout:
                    try:
                        deliver(flat)
                    except Exception as exc:
                        self._count_failure(emitted, "fanout", exc)
        return emitted

    def add_fanout(self, deliver: Callable[[dict[str, Any]], None]) -> None:
        """deliver(record) with every later record's flat form, in seq order, under the
        log's lock: it must hand the record on without blocking and never call `emit`."""
        self._fanout.append(deliver)

    def count_failure(self, sink: str, reason: str, count: int = 1) -> None:
        """Count failures of `sink` (any thread); shown in /metrics and `openrtc top`."""
        with self._failures_lock:
            self.sink_failures += count
            self.failures[(sink, reason)] += count

    def emit_refusal(
        self,
        event: str,
        /,
        *,
        reason: str,
        source: str,
        actor: str = "system",
        target: str = "",
        **fields: Any,
    ) -> AuditEvent | None:
        """Audit a refusal an outsider can repeat at will, at a bounded volume.

        The first refusal of a kind (event, reason, source) in each interval
        (`refusal_interval_s`) is recorded in full, with `source`; identical ones
        inside the interval are only counted, and the count is recorded as one
        `audit.refusals_repeated` record when the interval ends (at the next refusal,
        on the writer's periodic sweep, or at close). Returns the record, or None when
        the refusal was only counted.
        """
        source = str(cap_value(str(source)))[:128]
        full, counted_as, due = self._refusals.admit(event, str(reason), source)
        self._record_repeats(due)
        if not full:
            return None
        return self.emit(
            event,
            actor=actor,
            target=target,
            result="refused",
            reason=reason,
            source=counted_as,
            **fields,
        )

    def _record_repeats(self, due: list[Repeats]) -> None:
        for repeats in due:
            self.emit(
                "audit.refusals_repeated",
                target=repeats.source,
                result="refused",
                refused_event=repeats.event,
                reason=repeats.reason,
                source=repeats.source,
                count=repeats.count,
                interval_s=repeats.interval_s,
            )

    def _enqueue(self, event: AuditEvent) -> None:
        """Hand a record to the writer thread (called under the emit lock, in seq order)."""
        if self._file is None and not self._outputs:
            return
        with self._cond:
            if self._stopping:
                failed = self._file is not None
            else:
                failed = False
                self._queue.append(event)
                self._queued_seq = event.seq
                self._cond.notify_all()
        if failed:
            self._count_failure(event, "file", OSError("the audit file is closed"))

    def _run(self) -> None:
        sweep_every = min(1.0, self._refusals.interval_s / 2)
        next_sweep = time.monotonic() + sweep_every
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    left = next_sweep - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = list(self._queue)
                self._queue.clear()
                stopping = self._stopping
                outputs = list(self._outputs)
            if batch:
                self._write(batch, outputs)
                with self._cond:
                    self._written_seq = batch[-1].seq
                    self._cond.notify_all()
            elif stopping:
                return
            if not stopping and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + sweep_every
                try:
                    self._record_repeats(self._refusals.due())
                except Exception:
                    _errors.exception("audit writer: recording repeated refusals failed")

    def _write(self, batch: list[AuditEvent], outputs: list[tuple[str, Output]]) -> None:
        file = self._file
        if file is not None:
            try:
                file.append(batch)
            except OSError as exc:
                self._count_failure(batch[0], "file", exc, count=len(batch))
            else:
                try:
                    file.write_head(batch[-1].seq, batch[-1].hash)
                except OSError as exc:
                    self._count_failure(batch[-1], "head file", exc)
        for name, output in outputs:
            try:
                output(batch)
            except Exception as exc:
                self._count_failure(batch[0], name, exc, count=len(batch))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record emitted so far is written and handed to the callable
        sink; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued_seq
            while self._written_seq < target and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        if self._sink is not None:
            return self._sink.flush(max(0.0, deadline - time.monotonic()))
        return True

    def _log_event(self, event: AuditEvent) -> None:
        assert self._logger is not None
        self._logger.info("%s", event.to_json())

    def _deliver(self, event: AuditEvent, sink: Callable[[AuditEvent], None], name: str) -> None:
        try:
            sink(event)
        except Exception as exc:
            self._count_failure(event, name, exc)

    def _count_failure(
        self, event: AuditEvent, name: str, exc: BaseException, *, count: int = 1
    ) -> None:
        self.count_failure(name, type(exc).__name__, count)
        _errors.error(
            "audit %s sink failed for seq %d (%s)%s: %s",
            name,
            event.seq,
            event.event,
            "" if count == 1 else f" and the {count - 1} records after it",
            type(exc).__name__,
        )

    def recent(self, n: int) -> list[AuditEvent]:
        """Return up to the last `n` events kept in memory, oldest first."""
        if n <= 0:
            return []
        with self._lock:
            items = list(self._recent)
        return items[-n:]

    def close(self, timeout: float = 10.0) -> None:
        """Record pending refusal counts, write everything queued, release the file.

        The callable sink and the logger keep working afterwards; the file does not.
        """
        if self._closed:
            return
        try:
            self._record_repeats(self._refusals.due(everything=True))
        except Exception:
            _errors.exception("audit: recording repeated refusals at close failed")
        with self._cond:
            self._stopping = True
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._sink is not None:
            self._sink.close(timeout)
        if self._file is not None:
            self._file.close()
        _open_logs.discard(self)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
