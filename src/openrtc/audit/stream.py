"""Audit records picked out of a mixed log stream, and each worker's chain verified.

A log store's export holds the marked lines of `--audit-stdout` (or a collector's file
of `--audit-url` batches) among ordinary log lines, several workers interleaved, maybe
wrapped by the shipper (a CRI prefix, or the line as a string in a `log` / `message`
field). Lines without the marker are ignored; a line that carries the marker but no
readable envelope is a problem, since it may be a damaged record. Identical copies of a
record (a shipper or collector that delivered twice) count once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..keys import KeyRing
from .sinks import FORMAT, MARKER
from .verify import ChainReport, verify_records

MAX_LINE_BYTES = 1 << 20
"""Longer lines are not parsed (a record is a few hundred bytes)."""
_WRAPPER_KEYS = ("log", "message", "msg", "MESSAGE", "_raw", "line", "body")
_MAX_WRAPPING = 3
_MARKER_BYTES = MARKER.encode()


@dataclasses.dataclass(frozen=True)
class WorkerChain:
    """What was proved of one worker's records in the stream."""

    worker: str
    worker_ids: tuple[str, ...]
    report: ChainReport
    duplicates: int
    first_line: int
    last_event: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "worker_ids": list(self.worker_ids),
            "ok": self.report.ok,
            "records": self.report.records,
            "first_bad_seq": self.report.first_bad_seq,
            "reason": self.report.reason,
            "duplicates": self.duplicates,
            "last_event": self.last_event,
        }


@dataclasses.dataclass(frozen=True)
class StreamReport:
    """Outcome of `verify_stream`: one chain per worker, and lines that could not be read."""

    workers: tuple[WorkerChain, ...]
    audit_lines: int
    other_lines: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.workers) and not self.problems and all(w.report.ok for w in self.workers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "workers": [w.to_dict() for w in self.workers],
            "audit_lines": self.audit_lines,
            "other_lines": self.other_lines,
            "problems": list(self.problems),
        }


def _envelope(document: Any, depth: int = 0) -> Mapping[str, Any] | None:
    """The marked envelope in a parsed line, looking inside a shipper's wrapper fields."""
    if not isinstance(document, dict):
        return None
    if MARKER in document:
        return document
    if depth >= _MAX_WRAPPING:
        return None
    for key in _WRAPPER_KEYS:
        inner = document.get(key)
        if isinstance(inner, dict):
            found = _envelope(inner, depth + 1)
        elif isinstance(inner, str) and MARKER in inner:
            found = _envelope(_parse(inner.encode("utf-8")), depth + 1)
        else:
            continue
        if found is not None:
            return found
    return None


def _parse(line: bytes) -> Any:
    start = line.find(b"{")
    if start < 0:
        return None
    try:
        return json.loads(line[start:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def audit_records(
    lines: Iterable[bytes],
) -> Iterator[tuple[int, str, Mapping[str, Any] | str]]:
    """(line number, worker, record) for each audit line; a str record says what is wrong.

    Lines without the marker are skipped; the worker is "" when a marked line cannot
    be attributed to one.
    """
    for lineno, line in enumerate(lines, start=1):
        if _MARKER_BYTES not in line:
            continue
        if len(line) > MAX_LINE_BYTES:
            yield lineno, "", f"is longer than {MAX_LINE_BYTES} bytes"
            continue
        envelope = _envelope(_parse(line))
        if envelope is None:
            yield lineno, "", "mentions openrtc_audit but holds no readable audit record"
            continue
        worker = envelope.get("worker")
        record = envelope.get("record")
        if envelope.get(MARKER) != FORMAT:
            yield lineno, "", f"has audit format {envelope.get(MARKER)!r}, not {FORMAT}"
        elif not isinstance(worker, str) or not worker:
            yield lineno, "", "has no worker name"
        elif not isinstance(record, dict):
            yield lineno, worker, "has no record object"
        else:
            yield lineno, worker, record


def verify_stream(lines: Iterable[bytes], keys: KeyRing | None = None) -> StreamReport:
    """Group the stream's audit records per worker and verify each chain in stream order."""
    chains: dict[str, list[tuple[int, Mapping[str, Any] | str]]] = {}
    seen: dict[tuple[str, object], object] = {}
    duplicates: dict[str, int] = {}
    problems: list[str] = []
    audit = other = 0
    counted = _Counting(lines)
    for lineno, worker, record in audit_records(counted):
        audit += 1
        if not worker:
            problems.append(f"line {lineno} {record}")
            continue
        chain = chains.setdefault(worker, [])
        duplicates.setdefault(worker, 0)
        if isinstance(record, dict):
            key = (worker, record.get("seq"))
            body = json.dumps(record, sort_keys=True)
            if seen.get(key) == body:
                duplicates[worker] += 1
                continue
            seen.setdefault(key, body)
        chain.append((lineno, record))
    other = counted.count - audit
    workers = []
    for worker, items in chains.items():
        report = verify_records(items, keys)
        records = [r for _, r in items if isinstance(r, Mapping)]
        ids = tuple(dict.fromkeys(str(r.get("worker_id")) for r in records if r.get("worker_id")))
        workers.append(
            WorkerChain(
                worker=worker,
                worker_ids=ids,
                report=report,
                duplicates=duplicates[worker],
                first_line=items[0][0],
                last_event=str(records[-1].get("event", "")) if records else "",
            )
        )
    return StreamReport(tuple(workers), audit, other, tuple(problems))


class _Counting:
    """Iterates lines, counting them."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = lines
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._lines:
            self.count += 1
            yield line
