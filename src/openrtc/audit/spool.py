"""The on-disk spool: audit lines a collector has not acknowledged yet, kept in order.

A spool directory holds slots (`slot-0`, `slot-1`, ...). Each worker process locks the
first free slot, so several workers can share one directory and a restarted worker
takes over the slot a stopped one left, with everything it still held. A slot is a
run of numbered segment files of JSON lines plus an `ack` file naming how far the
collector has acknowledged; acknowledged segments are deleted.

Lines are appended with one `write()` each and without waiting for the disk, so a
SIGKILLed worker loses nothing the kernel already holds; `sync()` makes them survive a
power loss too and is called off the event loop before each send.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms
    fcntl = None  # type: ignore[assignment]

import contextlib

from .head import AuditFileError

logger = logging.getLogger("openrtc.audit")

MAX_SLOTS = 256
"""Slots tried in one spool directory before giving up."""
SEGMENT_BYTES = 1 << 20
"""A segment is closed and a new one started once it holds this much."""
_SUFFIX = ".jsonl"


@dataclasses.dataclass(frozen=True, order=True)
class Position:
    """A place in the spool: a segment number and a byte offset in it."""

    segment: int
    offset: int


@dataclasses.dataclass(frozen=True)
class Batch:
    """Lines read from the spool, and where the spool stands once they are acknowledged."""

    lines: tuple[bytes, ...]
    end: Position
    skipped: int = 0
    """Bytes of torn lines passed over on the way to `end`."""

    @property
    def size(self) -> int:
        return sum(len(line) for line in self.lines)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Spool:
    """One worker's slot in a spool directory: append, read in order, acknowledge."""

    def __init__(self, root: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = Path(root)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AuditFileError(
                f"cannot create audit spool directory {self.root}: {e.strerror}"
            ) from None
        self.slot, self._lock_fd = self._take_slot()
        self._segments = sorted(
            int(p.stem) for p in self.slot.glob(f"*{_SUFFIX}") if p.stem.isdigit()
        )
        self._read = self._load_ack()
        for number in [n for n in self._segments if n < self._read.segment]:
            self._remove(number)
        self.pending_bytes = sum(self._size(n) for n in self._segments) - self._read.offset
        self.resumed_bytes = self.pending_bytes
        """Unacknowledged bytes a previous worker left in this slot."""
        self._write_segment = (self._segments[-1] + 1) if self._segments else 1
        self._write_fd: int | None = None
        self._write_size = 0

    # --- the slot ----------------------------------------------------------------------
    def _take_slot(self) -> tuple[Path, int]:
        for n in range(MAX_SLOTS):
            slot = self.root / f"slot-{n}"
            try:
                slot.mkdir(exist_ok=True)
                fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o640)
            except OSError as e:
                raise AuditFileError(
                    f"cannot use audit spool directory {self.root}: {e.strerror}"
                ) from None
            if fcntl is None:
                return slot, fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        raise AuditFileError(f"every slot of audit spool directory {self.root} is in use")

    def _path(self, segment: int) -> Path:
        return self.slot / f"{segment:012d}{_SUFFIX}"

    def _size(self, segment: int) -> int:
        try:
            return self._path(segment).stat().st_size
        except FileNotFoundError:
            return 0

    def _remove(self, segment: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(segment).unlink()
        if segment in self._segments:
            self._segments.remove(segment)

    def _load_ack(self) -> Position:
        first = Position(self._segments[0] if self._segments else 1, 0)
        try:
            document = json.loads((self.slot / "ack").read_text())
            position = Position(int(document["segment"]), int(document["offset"]))
        except FileNotFoundError:
            return first
        except (OSError, ValueError, KeyError, TypeError):
            logger.error("audit spool %s: ack file unreadable; resending the whole slot", self.slot)
            return first
        if position.segment not in self._segments:
            later = [n for n in self._segments if n > position.segment]
            return Position(later[0], 0) if later else Position(position.segment, 0)
        return position

    @property
    def position(self) -> Position:
        """How far the collector has acknowledged."""
        with self._lock:
            return self._read

    # --- writing (the emitting thread) ---------------------------------------------------
    def append(self, line: bytes) -> None:
        """Add one line (ending in a newline); raises OSError when the disk refuses it."""
        with self._lock:
            if self._write_fd is None or self._write_size >= self.segment_bytes:
                self._rotate()
            assert self._write_fd is not None
            _write_all(self._write_fd, line)
            self._write_size += len(line)
            self.pending_bytes += len(line)

    def _rotate(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
            self._write_segment += 1
        fd = os.open(self._path(self._write_segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._write_fd = fd
        self._write_size = os.lseek(fd, 0, os.SEEK_END)
        if self._write_segment not in self._segments:
            self._segments.append(self._write_segment)

    def sync(self) -> None:
        """Make every appended line survive a power loss."""
        with self._lock:
            fd = self._write_fd
            if fd is not None:
                os.fsync(fd)

    # --- reading and acknowledging (the delivering thread) --------------------------------
    def read(self, *, max_lines: int, max_bytes: int) -> Batch:
        """The oldest unacknowledged lines, in order (empty when all were acknowledged).

        A segment this process no longer writes that ends in a torn line (a crash in
        the middle of a write) is passed over after its last whole line.
        """
        with self._lock:
            segments = [n for n in self._segments if n >= self._read.segment]
            writing = self._write_segment
        position = self._read
        lines: list[bytes] = []
        taken = skipped = 0
        for number in segments:
            offset = position.offset if number == position.segment else 0
            path = self._path(number)
            torn = b""
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    while len(lines) < max_lines and taken < max_bytes:
                        line = handle.readline()
                        if not line.endswith(b"\n"):
                            torn = line
                            break
                        lines.append(line)
                        taken += len(line)
                        offset += len(line)
                        position = Position(number, offset)
                    else:
                        return Batch(tuple(lines), position, skipped)
            except FileNotFoundError:
                pass
            if number >= writing:
                break
            if torn:
                logger.error(
                    "audit spool %s: segment %d ends in a torn line (%d bytes); skipping it",
                    self.slot,
                    number,
                    len(torn),
                )
                skipped += len(torn)
            later = [n for n in segments if n > number]
            if not later:
                break
            position = Position(later[0], 0)
        return Batch(tuple(lines), position, skipped)

    def ack(self, batch: Batch) -> None:
        """The collector acknowledged `batch`: record it and delete finished segments."""
        if batch.end == self._read:
            return
        temp = self.slot / "ack.tmp"
        data = json.dumps(dataclasses.asdict(batch.end)).encode()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.slot / "ack")
        with self._lock:
            self._read = batch.end
            self.pending_bytes = max(0, self.pending_bytes - batch.size - batch.skipped)
            for number in [n for n in self._segments if n < batch.end.segment]:
                self._remove(number)

    def close(self) -> None:
        """Release the slot: emptied when all was acknowledged, else kept for the next worker."""
        with self._lock:
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
            if self.pending_bytes == 0:
                for number in list(self._segments):
                    self._remove(number)
                with contextlib.suppress(FileNotFoundError):
                    (self.slot / "ack").unlink()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
