"""Audit events for deploys, drains and rejections, with a tamper-evident hash chain.

Every event gets a sequence number that is never reused and the hash of the event
before it, so an operator can prove after the fact that no record of a deploy,
drain or rejection was deleted, edited, reordered or inserted.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "GENESIS_HASH",
    "RESERVED_KEYS",
    "AuditEvent",
    "AuditFileError",
    "AuditLog",
    "ChainReport",
    "record_hash",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first record of a chain."""

RESERVED_KEYS = frozenset(
    {
        "seq",
        "timestamp",
        "event",
        "actor",
        "target",
        "result",
        "version",
        "worker_id",
        "host",
        "prev_hash",
        "hash",
    }
)
"""Top-level keys of a flat record; extra fields may not use these names."""

_LOGGER_NAME = "openrtc.audit"
_errors = logging.getLogger("openrtc")
_TAIL_CHUNK = 8192


class AuditFileError(ValueError):
    """The audit file cannot be continued safely (damaged tail or another writer)."""


def _canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """Return the sha256 hex digest of a flat record, ignoring its own `hash` key."""
    unsigned = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(_canonical(unsigned)).hexdigest()


def _check_field_names(names: Iterable[object]) -> None:
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"audit field name {name!r} is not a non-empty string; rename it")
        if name in RESERVED_KEYS:
            raise ValueError(
                f"audit field {name!r} would shadow a built-in record key; rename the field"
            )


def _json_safe(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return `fields` as JSON would read them back, so hashes verify from the file alone."""
    loaded = json.loads(json.dumps(dict(fields), default=str, ensure_ascii=False))
    assert isinstance(loaded, dict)
    return loaded


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """One audit record; `to_dict()` is the flat form written to every sink."""

    seq: int
    timestamp: float
    event: str
    actor: str
    target: str
    result: str
    version: str
    worker_id: str
    host: str
    fields: dict[str, Any]
    prev_hash: str
    hash: str

    def __post_init__(self) -> None:
        _check_field_names(self.fields)

    def to_dict(self) -> dict[str, Any]:
        """Return the flat record: named keys, extra fields at top level, both hashes."""
        record: dict[str, Any] = {
            "seq": self.seq,
            "timestamp": self.timestamp,
            "event": self.event,
            "actor": self.actor,
            "target": self.target,
            "result": self.result,
            "version": self.version,
            "worker_id": self.worker_id,
            "host": self.host,
        }
        record.update(self.fields)
        record["prev_hash"] = self.prev_hash
        record["hash"] = self.hash
        return record

    def to_json(self) -> str:
        """Return the record as one compact JSON line (no trailing newline)."""
        return _canonical(self.to_dict()).decode("utf-8")


@dataclasses.dataclass(frozen=True)
class ChainReport:
    """Outcome of `verify_chain`.

    `records` counts the records that verified before the first problem. `first_bad_seq`
    is the seq written on the first record that fails, or the seq expected at a line
    that cannot be read; it is None when the chain is intact.
    """

    ok: bool
    records: int
    first_bad_seq: int | None
    reason: str


_STRING_KEYS = ("event", "actor", "target", "result", "version", "worker_id", "host")


def _problem(record: Mapping[str, Any]) -> str | None:
    """Return what is structurally wrong with a parsed record, or None."""
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "has no integer seq"
    timestamp = record.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        return "has no numeric timestamp"
    for key in _STRING_KEYS:
        if not isinstance(record.get(key), str):
            return f"has no string {key!r}"
    for key in ("prev_hash", "hash"):
        value = record.get(key)
        if not isinstance(value, str) or len(value) != 64:
            return f"has no 64-character {key!r}"
    return None


def verify_chain(path: str | os.PathLike[str]) -> ChainReport:
    """Check an audit file end to end: seq continuity, the hash chain and every line.

    Detects a deleted, edited, reordered or inserted record and a truncated or garbled
    line. Blank lines are skipped. Raises FileNotFoundError when the file is missing.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"audit file {file} does not exist; check the path and retry")
    count = 0
    prev_seq = 0
    prev_hash = GENESIS_HASH
    with file.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            expected = prev_seq + 1
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return ChainReport(
                    False, count, expected, f"line {lineno} is truncated or not valid JSON"
                )
            if not isinstance(record, dict):
                return ChainReport(False, count, expected, f"line {lineno} is not a JSON object")
            problem = _problem(record)
            if problem is not None:
                return ChainReport(False, count, expected, f"line {lineno} {problem}")
            seq: int = record["seq"]
            if record["hash"] != record_hash(record):
                return ChainReport(
                    False, count, seq, f"line {lineno} (seq {seq}) was modified after writing"
                )
            if seq != expected:
                return ChainReport(
                    False,
                    count,
                    seq,
                    f"line {lineno} has seq {seq} where {expected} was expected "
                    "(a record is missing, reordered or inserted)",
                )
            if record["prev_hash"] != prev_hash:
                return ChainReport(
                    False,
                    count,
                    seq,
                    f"line {lineno} (seq {seq}) does not chain to the record before it",
                )
            count += 1
            prev_seq = seq
            prev_hash = record["hash"]
    if count == 0:
        return ChainReport(True, 0, None, "the audit file is empty")
    return ChainReport(True, count, None, f"{count} records verified, last seq {prev_seq}")


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
    records already in it; one process may write a file at a time.
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
        last = _read_last_line(fd)
        if not last:
            return
        try:
            record = json.loads(last.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if not isinstance(record, dict) or _problem(record) is not None:
            raise AuditFileError(
                f"the last line of audit file {path} is truncated or garbled; "
                "check it with verify_chain() and move it aside before restarting"
            )
        if record["hash"] != record_hash(record):
            raise AuditFileError(
                f"the last record of audit file {path} was modified after writing; "
                "check it with verify_chain() and move it aside before restarting"
            )
        self._seq = record["seq"]
        self._last_hash = record["hash"]
        size = os.lseek(fd, 0, os.SEEK_END)
        self._needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"

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
        return emitted

    def _write_file(self, event: AuditEvent) -> None:
        data = (event.to_json() + "\n").encode("utf-8")
        if self._needs_newline:
            data = b"\n" + data
        try:
            if self._fd is None:
                raise OSError("the audit file is closed")
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
            self._needs_newline = False
        except OSError as exc:
            self._needs_newline = True
            self._count_failure(event, "file", exc)

    def _log_event(self, event: AuditEvent) -> None:
        assert self._logger is not None
        self._logger.info("%s", event.to_json())

    def _deliver(self, event: AuditEvent, sink: Callable[[AuditEvent], None], name: str) -> None:
        try:
            sink(event)
        except Exception as exc:
            self._count_failure(event, name, exc)

    def _count_failure(self, event: AuditEvent, name: str, exc: BaseException) -> None:
        self.sink_failures += 1
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
