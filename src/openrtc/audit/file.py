"""The audit file itself: one writer, appends in batches, fsync per batch, head after.

Only the writer thread (`writer.AuditLog`) calls `append`, so the disk never stalls
the event loop. A batch is written with one `write`, synced once (unless durability
is `"os"`), and then the head file is replaced with the batch's last seq and hash.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms
    fcntl = None  # type: ignore[assignment]

from ..keys import KeyRing
from .event import AuditEvent, _canonical, record_problem, seal_problem
from .head import AuditFileError, _Head, _read_head, _tail_problem, head_path, seal_head

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


class AuditFile:
    """An append-only JSON Lines audit file held open (and locked) by one process.

    `resume` is the (seq, hash) the next record chains to: the later of the file's last
    record and its head, so a seq is never reused even after records were cut.
    """

    def __init__(self, path: Path, keys: KeyRing | None, *, sync: bool = True) -> None:
        self.path = path
        self.sync = sync
        self._keys = keys
        self._needs_newline = False
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
            self.resume = self._resume_from(fd)
            if created:
                _fsync_dir(path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def _resume_from(self, fd: int) -> _Head | None:
        tail = self._file_tail(fd)
        try:
            head = _read_head(self.path)
        except AuditFileError as exc:
            raise AuditFileError(
                f"head file {head_path(self.path)} is unreadable ({exc}); move it aside to "
                "continue from the audit file's own last record"
            ) from None
        if head is None:
            return tail
        last_seq = 0 if tail is None else tail.seq
        problem = _tail_problem(last_seq, {} if tail is None else {tail.seq: tail.hash}, head)
        if problem is not None:
            _errors.error(
                "audit file %s: %s; new records follow seq %d",
                self.path,
                problem[1],
                max(last_seq, head.seq),
            )
        return head if head.seq > last_seq else tail

    def _file_tail(self, fd: int) -> _Head | None:
        last = _read_last_line(fd)
        if not last:
            return None
        try:
            record = json.loads(last.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if not isinstance(record, dict) or record_problem(record) is not None:
            raise AuditFileError(
                f"the last line of audit file {self.path} is truncated or garbled; "
                "check it with `openrtc audit verify` and move it aside before restarting"
            )
        sealed = seal_problem(record, self._keys if "kid" in record else None)
        if sealed is not None:
            raise AuditFileError(
                f"the last record of audit file {self.path} {sealed}; check it with "
                "`openrtc audit verify` and move it aside before restarting"
            )
        if self._keys is not None and "kid" not in record:
            _errors.warning(
                "audit file %s holds a plain chain and is now continued with an audit key: "
                "`openrtc audit verify` with the key fails on its plain part; start a new "
                "file when turning the key on",
                self.path,
            )
        size = os.lseek(fd, 0, os.SEEK_END)
        self._needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        return _Head(record["seq"], record["hash"])

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Write `events` in one go and sync them once; raises OSError. The caller then
        moves the head (`write_head`), so a failed head is told apart from a failed write."""
        if not events:
            return
        data = b"".join((event.to_json() + "\n").encode("utf-8") for event in events)
        if self._needs_newline:
            data = b"\n" + data
        if self._fd is None:
            raise OSError("the audit file is closed")
        try:
            _write_all(self._fd, data)
            if self.sync:
                os.fsync(self._fd)
            self._needs_newline = False
        except OSError:
            self._needs_newline = True
            raise

    def write_head(self, seq: int, digest: str) -> None:
        """Replace the head whole (never torn) with the log's last seq and hash."""
        target = head_path(self.path)
        temp = target.with_name(target.name + ".tmp")
        head = seal_head(seq, digest, self._keys)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            _write_all(fd, _canonical(head.document()) + b"\n")
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
