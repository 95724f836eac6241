"""Checking an audit file end to end: every line, the chain, and the end against its head."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from .event import GENESIS_HASH, record_hash, record_problem
from .head import AuditFileError, _Head, _lagging_head, _read_head, _tail_problem, head_path


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


@dataclasses.dataclass
class _Scan:
    """What a pass over an audit file found: a problem, or the end of an intact chain."""

    problem: ChainReport | None = None
    records: int = 0
    last_seq: int = 0
    recent: dict[int, str] = dataclasses.field(default_factory=dict)
    """Hashes of the last two records by seq, to compare with the head."""


def _parsed_lines(handle: IO[bytes]) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(line number, record) for each non-blank line, or (line number, what is wrong)."""
    for lineno, raw in enumerate(handle, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            yield lineno, "is truncated or not valid JSON"
            continue
        if not isinstance(record, dict):
            yield lineno, "is not a JSON object"
            continue
        yield lineno, record


def _scan_chain(file: Path) -> _Scan:
    """Check seq continuity, the hash chain and every line of `file`, start to end."""
    with file.open("rb") as handle:
        return _scan(_parsed_lines(handle))


def _scan(items: Iterable[tuple[int, Mapping[str, Any] | str]]) -> _Scan:
    """Check seq continuity and the hash chain of (line number, record) pairs, in order.

    A str in place of a record says what is wrong with that line.
    """
    scan = _Scan()
    prev_hash = GENESIS_HASH
    for lineno, record in items:
        count = scan.records
        expected = scan.last_seq + 1
        if isinstance(record, str):
            scan.problem = ChainReport(False, count, expected, f"line {lineno} {record}")
            return scan
        problem = record_problem(record)
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


def verify_records(records: Iterable[tuple[int, Mapping[str, Any] | str]]) -> ChainReport:
    """Check one chain held in memory: (line number in its source, record) pairs in order.

    A str in place of a record says what is wrong with that line (it fails the chain).

    The same checks as `verify_chain` except the end: a stream has no head file, so
    records cut from its end cannot show.
    """
    scan = _scan(records)
    if scan.problem is not None:
        return scan.problem
    if scan.records == 0:
        return ChainReport(True, 0, None, "no records")
    return ChainReport(
        True,
        scan.records,
        None,
        f"{scan.records} records verified, last seq {scan.last_seq}",
    )


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
