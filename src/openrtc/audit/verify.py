"""Checking an audit file end to end: every line, the chain, and the end against its head."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from ..keys import KeyRing
from .event import GENESIS_HASH, record_problem, seal_problem
from .head import (
    AuditFileError,
    _Head,
    _lagging_head,
    _read_head,
    _tail_problem,
    head_path,
    head_seal_problem,
)


@dataclasses.dataclass(frozen=True)
class ChainReport:
    """Outcome of `verify_chain`.

    `records` counts the records that verified before the first problem. `first_bad_seq`
    is the seq written on the first record that fails, or the seq expected at a line
    that cannot be read or that was deleted from the end; it is None when the chain is
    intact. `warnings` say what the check could not prove although it passed (a plain
    chain, a missing head allowed by the caller).
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


def _scan_chain(file: Path, keys: KeyRing | None) -> _Scan:
    """Check seq continuity, the seals, the chain and every line of `file`, start to end."""
    with file.open("rb") as handle:
        return _scan(_parsed_lines(handle), keys)


def _scan(items: Iterable[tuple[int, Mapping[str, Any] | str]], keys: KeyRing | None) -> _Scan:
    """Check seq continuity, each record's seal and the chain of (line number, record)
    pairs, in order. A str in place of a record says what is wrong with that line."""
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
        sealed = seal_problem(record, keys)
        if sealed is not None:
            scan.problem = ChainReport(False, count, seq, f"line {lineno} (seq {seq}) {sealed}")
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


def verify_records(
    records: Iterable[tuple[int, Mapping[str, Any] | str]], keys: KeyRing | None = None
) -> ChainReport:
    """Check one chain held in memory: (line number in its source, record) pairs in order.

    The same checks as `verify_chain` (seals with `keys`, seq continuity, the chain)
    except the end: a stream has no head file, so records cut from its end cannot show.
    """
    scan = _scan(records, keys)
    if scan.problem is not None:
        return scan.problem
    if scan.records == 0:
        return ChainReport(True, 0, None, "no records")
    sealed = "HMAC-sealed" if keys is not None else "plain sha256"
    return ChainReport(
        True,
        scan.records,
        None,
        f"{scan.records} records verified ({sealed}), last seq {scan.last_seq}",
    )


def _head_problem(file: Path, keys: KeyRing | None) -> tuple[_Head | None, str | None]:
    """Read the head of `file`: (head, why it cannot be used)."""
    name = head_path(file).name
    try:
        head = _read_head(file)
    except AuditFileError as exc:
        return None, f"head file {name} is unreadable ({exc})"
    if head is None:
        return None, None
    sealed = head_seal_problem(head, keys)
    if sealed is not None:
        return None, f"head file {name} cannot be trusted: {sealed}"
    return head, None


def verify_chain(
    path: str | os.PathLike[str],
    keys: KeyRing | None = None,
    *,
    allow_missing_head: bool = False,
) -> ChainReport:
    """Check an audit file end to end: every line, every seal, the chain and its end.

    With `keys` (the audit key file) every record and the head must carry a valid HMAC,
    so a chain edited and recomputed without the key fails. Without keys, records are
    checked against plain sha256 (accidents only), and a keyed record fails because it
    cannot be checked. Fails on a deleted, edited, reordered or inserted record, a
    garbled line, a head ahead of or behind the log (a cut tail), an unreadable head,
    and a missing head unless `allow_missing_head` (then a warning says what is not
    proven). Raises FileNotFoundError when the file is missing.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"audit file {file} does not exist; check the path and retry")
    for _attempt in range(3):
        report = _verify_once(file, keys, allow_missing_head)
        if report is not None:
            return report
    return ChainReport(
        False,
        0,
        None,
        "the log kept growing past its head while it was read; verify it again "
        "once its writer has stopped",
    )


def _verify_once(file: Path, keys: KeyRing | None, allow_missing_head: bool) -> ChainReport | None:
    """One pass over the file and its head; None when a live writer moved the head past
    the records read (the caller reads again)."""
    head, unusable = _head_problem(file, keys)
    scan = _scan_chain(file, keys)
    warnings: tuple[str, ...] = ()
    if keys is None and scan.records > 0:
        warnings = (
            "no audit key given: the chain is checked with plain sha256, which shows "
            "accidents, not forgery",
        )
    if scan.problem is not None:
        return dataclasses.replace(scan.problem, warnings=warnings)
    if head is not None and scan.last_seq > head.seq:
        head = _settled_head(file, head, scan.last_seq, keys)
        if head is None:
            return None
    if unusable is not None:
        return ChainReport(False, scan.records, scan.last_seq + 1, unusable, warnings)
    if head is None:
        if scan.records == 0:
            return ChainReport(True, 0, None, "the audit file is empty", warnings)
        if head_path(file).exists():
            return None  # a live writer wrote its first head while the log was read
        name = head_path(file).name
        missing = (
            f"head file {name} is missing, so records deleted from the end of the log "
            "cannot be detected"
        )
        if not allow_missing_head:
            return ChainReport(False, scan.records, scan.last_seq + 1, missing, warnings)
        warnings = (*warnings, missing)
    else:
        problem = _tail_problem(scan.last_seq, scan.recent, head)
        if problem is not None:
            first_bad, reason = problem
            return ChainReport(False, scan.records, first_bad, reason, warnings)
        lagging = _lagging_head(scan.last_seq, head)
        if lagging is not None:
            return ChainReport(False, scan.records, head.seq + 1, lagging, warnings)
    if scan.records == 0:
        return ChainReport(True, 0, None, "the audit file is empty", warnings)
    sealed = "HMAC-sealed" if keys is not None else "plain sha256"
    return ChainReport(
        True,
        scan.records,
        None,
        f"{scan.records} records verified ({sealed}), last seq {scan.last_seq}",
        warnings,
    )


def _settled_head(file: Path, head: _Head, last_seq: int, keys: KeyRing | None) -> _Head | None:
    """Re-read a head that trails the log.

    A live writer may have appended while the log was read; its newer head is compared
    instead. A head now past `last_seq` means the log grew after it was read, which
    leaves no end to compare (None); a head that did not move is returned as it was.
    """
    try:
        fresh = _read_head(file)
    except AuditFileError:
        return head
    if fresh is None or fresh.seq <= head.seq or head_seal_problem(fresh, keys) is not None:
        return head
    return fresh if fresh.seq <= last_seq else None
