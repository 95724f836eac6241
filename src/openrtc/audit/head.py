"""The head file next to an audit file: its last seq and hash, so a cut tail shows."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

HEAD_SUFFIX = ".head"
"""Appended to an audit file's name to name its head file."""


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
