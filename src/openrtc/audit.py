"""Audit events for deploys, drains and rejections, with a tamper-evident hash chain.

Every event gets a sequence number that is never reused and the hash of the event
before it, so an operator can prove after the fact that no record of a deploy,
drain or rejection was deleted, edited, reordered or inserted. A file log also keeps
a small head file (`<log>.head`) holding its last seq and hash, because a chain alone
cannot show that records were cut from its end.
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
    "HEAD_SUFFIX",
    "RESERVED_KEYS",
    "AuditEvent",
    "AuditFileError",
    "AuditLog",
    "ChainReport",
    "head_path",
    "record_hash",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first record of a chain."""

HEAD_SUFFIX = ".head"
"""Appended to an audit file's name to name its head file."""

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
    """The audit file cannot be continued safely (damaged tail or head, or another writer)."""


def head_path(path: str | os.PathLike[str]) -> Path:
    """Return the head file kept next to audit file `path`; move both when rotating."""
    file = Path(path)
    return file.with_name(file.name + HEAD_SUFFIX)


@dataclasses.dataclass(frozen=True)
class _Head:
    """The seq and hash of a log's last record, as its writer last recorded them."""

    seq: int
    hash: str


def _read_head(log: Path) -> _Head | None:
    """Return the head of audit file `log`, None when it has none.

    Raises AuditFileError naming what is wrong when the head file exists but cannot
    be used.
    """
    file = head_path(log)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditFileError(exc.strerror or type(exc).__name__) from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AuditFileError("it is not valid JSON") from None
    seq = document.get("seq") if isinstance(document, dict) else None
    digest = document.get("hash") if isinstance(document, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise AuditFileError("it has no positive integer seq")
    if not isinstance(digest, str) or len(digest) != 64:
        raise AuditFileError("it has no 64-character hash")
    return _Head(seq, digest)


def _records(first: int, last: int) -> str:
    return f"record {first} was" if first == last else f"records {first}..{last} were"


def _tail_problem(last_seq: int, known: Mapping[int, str], head: _Head) -> tuple[int, str] | None:
    """Compare the end of a log with its head; return (first bad seq, reason) or None.

    A head ahead of the log means records were cut from the end; a head whose record
    reads differently means the end was rewritten. A head behind the log is not a
    problem here (see `_lagging_head`). `known` maps the seqs whose hashes the caller
    read to those hashes.
    """
    if head.seq > last_seq:
        return last_seq + 1, (
            f"the log ends at seq {last_seq} but its head file says it runs to seq "
            f"{head.seq}: {_records(last_seq + 1, head.seq)} deleted from the end"
        )
    written = known.get(head.seq)
    if written is not None and written != head.hash:
        return head.seq, (
            f"record seq {head.seq} is not the one its head file recorded: "
            "the end of the log was rewritten"
        )
    return None


def _lagging_head(last_seq: int, head: _Head) -> str | None:
    """A warning when the head trails the log by more than the one record in flight.

    The head is replaced after each append without waiting for the disk, so after a
    power loss it may trail; records past it are then not covered by the cut-tail check.
    """
    if last_seq <= head.seq + 1:
        return None
    return (
        f"head file stops at seq {head.seq} but the log runs to seq {last_seq}: a cut "
        f"of {_records(head.seq + 2, last_seq)} would not show (the head's last updates "
        "did not reach the disk, or it was replaced)"
    )


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
    that cannot be read or that was deleted from the end; it is None when the chain is
    intact. `warnings` say what could not be checked without failing the log, such as
    a missing head file.
    """

    ok: bool
    records: int
    first_bad_seq: int | None
    reason: str
    warnings: tuple[str, ...] = ()


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


@dataclasses.dataclass
class _Scan:
    """What a pass over an audit file found: a problem, or the end of an intact chain."""

    problem: ChainReport | None = None
    records: int = 0
    last_seq: int = 0
    recent: dict[int, str] = dataclasses.field(default_factory=dict)
    """Hashes of the last two records by seq, to compare with the head."""


def _scan_chain(file: Path) -> _Scan:
    """Check seq continuity, the hash chain and every line of `file`, start to end."""
    scan = _Scan()
    prev_hash = GENESIS_HASH
    with file.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            count = scan.records
            expected = scan.last_seq + 1
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                scan.problem = ChainReport(
                    False, count, expected, f"line {lineno} is truncated or not valid JSON"
                )
                return scan
            if not isinstance(record, dict):
                scan.problem = ChainReport(
                    False, count, expected, f"line {lineno} is not a JSON object"
                )
                return scan
            problem = _problem(record)
            if problem is not None:
                scan.problem = ChainReport(False, count, expected, f"line {lineno} {problem}")
                return scan
            seq: int = record["seq"]
            if record["hash"] != record_hash(record):
                scan.problem = ChainReport(
                    False, count, seq, f"line {lineno} (seq {seq}) was modified after writing"
                )
                return scan
            if seq != expected:
                scan.problem = ChainReport(
                    False,
                    count,
                    seq,
                    f"line {lineno} has seq {seq} where {expected} was expected "
                    "(a record is missing, reordered or inserted)",
                )
                return scan
            if record["prev_hash"] != prev_hash:
                scan.problem = ChainReport(
                    False,
                    count,
                    seq,
                    f"line {lineno} (seq {seq}) does not chain to the record before it",
                )
                return scan
            scan.recent = {scan.last_seq: prev_hash, seq: record["hash"]}
            scan.records += 1
            scan.last_seq = seq
            prev_hash = record["hash"]
    return scan


def _head_for_check(file: Path) -> tuple[_Head | None, str | None]:
    """Read the head of `file` for verification: (head, why it is unreadable)."""
    try:
        return _read_head(file), None
    except AuditFileError as exc:
        return None, str(exc)


def _head_warnings(file: Path, unreadable: str | None, missing: bool) -> tuple[str, ...]:
    """Say why the end of the log could not be checked; a warning, never a failure."""
    name = head_path(file).name
    consequence = "so records deleted from the end of the log cannot be detected"
    if unreadable is not None:
        return (f"head file {name} is unreadable ({unreadable}), {consequence}",)
    if missing:
        return (f"head file {name} is missing, {consequence}",)
    return ()


def verify_chain(path: str | os.PathLike[str]) -> ChainReport:
    """Check an audit file end to end: seq continuity, the hash chain, every line, the end.

    Detects a deleted, edited, reordered or inserted record, a truncated or garbled
    line, and records deleted from the end (against the head file, which may trail the
    log by one record after a crash). Blank lines are skipped. A missing or unreadable
    head file is a warning, not a failure. Raises FileNotFoundError when the file is
    missing.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"audit file {file} does not exist; check the path and retry")
    head, unreadable = _head_for_check(file)
    scan = _scan_chain(file)
    missing = head is None and unreadable is None and scan.records > 0
    warnings = _head_warnings(file, unreadable, missing)
    if scan.problem is not None:
        return dataclasses.replace(scan.problem, warnings=warnings)
    if head is not None and scan.last_seq > head.seq + 1:
        head = _settled_head(file, head, scan.last_seq)
    if head is not None:
        problem = _tail_problem(scan.last_seq, scan.recent, head)
        if problem is not None:
            first_bad, reason = problem
            return ChainReport(False, scan.records, first_bad, reason, warnings)
        lagging = _lagging_head(scan.last_seq, head)
        if lagging is not None:
            warnings = (*warnings, lagging)
    if scan.records == 0:
        return ChainReport(True, 0, None, "the audit file is empty", warnings)
    return ChainReport(
        True,
        scan.records,
        None,
        f"{scan.records} records verified, last seq {scan.last_seq}",
        warnings,
    )


def _settled_head(file: Path, head: _Head, last_seq: int) -> _Head | None:
    """Re-read a head that trails the log by more than one record.

    A live writer may have appended while the log was read; its newer head is compared
    instead. A head now past `last_seq` means the log grew after it was read, which
    leaves no end to compare (None); a head that did not move is returned as it was.
    """
    try:
        fresh = _read_head(file)
    except AuditFileError:
        return head
    if fresh is None or fresh.seq <= head.seq:
        return head
    return fresh if fresh.seq <= last_seq else None


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
        return emitted

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
