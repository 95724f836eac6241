"""Writing audit events: to the log, a callable and an append-only, fsync'ed file."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms
    fcntl = None  # type: ignore[assignment]

from .event import (
    GENESIS_HASH,
    AuditEvent,
    _canonical,
    _check_field_names,
    _json_safe,
    record_hash,
    record_problem,
)
from .head import AuditFileError, _Head, _read_head, _tail_problem, head_path

_LOGGER_NAME = "openrtc.audit"
_errors = logging.getLogger("openrtc")
_TAIL_CHUNK = 8192


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_last_line(fd: int) -> bytes:
    """Return the last non-blank line of an open file, reading backwards in chunks."""
    size = os.lseek(fd, 0, os.SEEK_END)
    pos = size
    buf = b""
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        if b"\n" in buf.rstrip():
            break
    return buf.rstrip().rsplit(b"\n", 1)[-1].strip()


class AuditLog:
    """Emit audit events to a logger, a callable and/or an append-only JSON Lines file.

    With no `sink` and no `path`, each event is one JSON line on the `openrtc.audit`
    logger at INFO; passing `logger` turns the logger sink on alongside the others.
    The file sink is fsync'ed per event and continues the seq and hash chain of the
    records already in it; one process may write a file at a time. After each append it
    replaces the head file (`<log>.head`) with the new last seq and hash; on reopening it
    continues after whichever of the file's last record and the head is later, so a seq
    is never reused even when records were cut from the end of the file.
    `emit` is thread-safe. Call it from threads or asyncio callbacks (including
    `loop.add_signal_handler`), not from a raw `signal.signal` handler, which can
    interrupt an emit already running on the same thread. Sinks run in seq order under
    the log's lock, so a sink must not call `emit` itself.
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
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}; pass a positive size")
        self.worker_id = worker_id
        self.version = version
        self.sink_failures = 0
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()
        """Sink failures by (sink, reason); `sink_failures` is their total."""
        self._failures_lock = threading.Lock()
        self._fanout: list[Callable[[dict[str, Any]], None]] = []
        self._sink = sink
        self._logger: logging.Logger | None = logger
        if logger is None and sink is None and path is None:
            self._logger = logging.getLogger(_LOGGER_NAME)
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._recent: collections.deque[AuditEvent] = collections.deque(maxlen=history)
        self._seq = 0
        self._last_hash = GENESIS_HASH
        self._fd: int | None = None
        self._path: Path | None = None
        self._needs_newline = False
        if path is not None:
            self._open_file(Path(path))

    @property
    def path(self) -> Path | None:
        """The audit file, if a file sink is configured."""
        return self._path

    @property
    def last_seq(self) -> int:
        """Seq of the most recent event (0 before the first)."""
        return self._seq

    @property
    def last_hash(self) -> str:
        """Hash of the most recent event (`GENESIS_HASH` before the first)."""
        return self._last_hash

    def _open_file(self, path: Path) -> None:
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise AuditFileError(
                        f"audit file {path} is in use by another writer; "
                        "give each worker its own audit path"
                    ) from None
            self._resume_from(fd, path)
            if created:
                self._fsync_dir(path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._path = path

    def _resume_from(self, fd: int, path: Path) -> None:
        """Continue after the later of the file's last record and its head, so no seq repeats."""
        tail = self._file_tail(fd, path)
        try:
            head = _read_head(path)
        except AuditFileError as exc:
            raise AuditFileError(
                f"head file {head_path(path)} is unreadable ({exc}); move it aside to "
                "continue from the audit file's own last record"
            ) from None
        resume = tail
        if head is not None:
            last_seq = 0 if tail is None else tail.seq
            problem = _tail_problem(last_seq, {} if tail is None else {tail.seq: tail.hash}, head)
            if problem is not None:
                _errors.error(
                    "audit file %s: %s; new records follow seq %d",
                    path,
                    problem[1],
                    max(last_seq, head.seq),
                )
            if head.seq > last_seq:
                resume = head
        if resume is not None:
            self._seq = resume.seq
            self._last_hash = resume.hash

    def _file_tail(self, fd: int, path: Path) -> _Head | None:
        """Return the seq and hash of the file's last record, None when it has none."""
        last = _read_last_line(fd)
        if not last:
            return None
        try:
            record = json.loads(last.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if not isinstance(record, dict) or record_problem(record) is not None:
            raise AuditFileError(
                f"the last line of audit file {path} is truncated or garbled; "
                f"check it with `openrtc audit verify {path}` and move it aside before restarting"
            )
        if record["hash"] != record_hash(record):
            raise AuditFileError(
                f"the last record of audit file {path} was modified after writing; "
                f"check it with `openrtc audit verify {path}` and move it aside before restarting"
            )
        size = os.lseek(fd, 0, os.SEEK_END)
        self._needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        return _Head(record["seq"], record["hash"])

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        try:
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

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

        Raises ValueError only for caller mistakes: an empty event name or an extra
        field that would shadow a built-in key.
        """
        if not isinstance(event, str) or not event:
            raise ValueError("audit event name must be a non-empty string like 'worker.started'")
        _check_field_names(fields)
        extra = _json_safe(fields)
        with self._lock:
            seq = self._seq + 1
            timestamp = time.time()
            unsigned = AuditEvent(
                seq=seq,
                timestamp=timestamp,
                event=event,
                actor=actor,
                target=target,
                result=result,
                version=self.version if version is None else version,
                worker_id=self.worker_id,
                host=self._host,
                fields=extra,
                prev_hash=self._last_hash,
                hash="",
            )
            record = unsigned.to_dict()
            emitted = dataclasses.replace(unsigned, hash=record_hash(record))
            self._seq = seq
            self._last_hash = emitted.hash
            self._recent.append(emitted)
            if self._path is not None:
                self._write_file(emitted)
            if self._sink is not None:
                self._deliver(emitted, self._sink, "sink")
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

    def count_failure(self, sink: str, reason: str) -> None:
        """Count one failure of `sink` (any thread); shown in /metrics and `openrtc top`."""
        with self._failures_lock:
            self.sink_failures += 1
            self.failures[(sink, reason)] += 1

    def _write_file(self, event: AuditEvent) -> None:
        data = (event.to_json() + "\n").encode("utf-8")
        if self._needs_newline:
            data = b"\n" + data
        try:
            if self._fd is None:
                raise OSError("the audit file is closed")
            _write_all(self._fd, data)
            os.fsync(self._fd)
            self._needs_newline = False
        except OSError as exc:
            self._needs_newline = True
            self._count_failure(event, "file", exc)
            return
        try:
            self._write_head(event)
        except OSError as exc:
            self._count_failure(event, "head file", exc)

    def _write_head(self, event: AuditEvent) -> None:
        """Record the last seq and hash; the head is replaced whole, never torn.

        Not synced to disk: the record itself was, and a head that trails after a power
        loss only narrows the cut-tail check (verify warns), while a sync here would
        triple the cost of every audit event on the worker's loop.
        """
        assert self._path is not None
        target = head_path(self._path)
        temp = target.with_name(target.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            _write_all(fd, _canonical({"seq": event.seq, "hash": event.hash}) + b"\n")
        finally:
            os.close(fd)
        os.replace(temp, target)

    def _log_event(self, event: AuditEvent) -> None:
        assert self._logger is not None
        self._logger.info("%s", event.to_json())

    def _deliver(self, event: AuditEvent, sink: Callable[[AuditEvent], None], name: str) -> None:
        try:
            sink(event)
        except Exception as exc:
            self._count_failure(event, name, exc)

    def _count_failure(self, event: AuditEvent, name: str, exc: BaseException) -> None:
        self.count_failure(name, type(exc).__name__)
        _errors.error(
            "audit %s sink failed for seq %d (%s): %s",
            name,
            event.seq,
            event.event,
            type(exc).__name__,
        )

    def recent(self, n: int) -> list[AuditEvent]:
        """Return up to the last `n` events kept in memory, oldest first."""
        if n <= 0:
            return []
        with self._lock:
            items = list(self._recent)
        return items[-n:]

    def close(self) -> None:
        """Close the audit file (releasing it for the next writer); other sinks keep working."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
