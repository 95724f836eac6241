"""Audit records picked out of what log stores export: wrapped, prefixed, duplicated."""

from __future__ import annotations

import json

from openrtc.audit import AuditLog
from openrtc.audit.sinks import envelope_line
from openrtc.audit.stream import verify_stream
from openrtc.cli.top import audit_text


def lines_of(worker: str, count: int) -> list[bytes]:
    log = AuditLog(sink=lambda event: None)
    return [envelope_line(worker, log.emit("e", index=i).to_dict()) for i in range(count)]


def test_shipper_wrappers_prefixes_and_duplicates_are_read_through() -> None:
    a, b = lines_of("a", 3), lines_of("b", 2)
    exported = [
        b"2026-01-01T00:00:00Z stdout F " + a[0],  # CRI prefix
        json.dumps({"log": a[1].decode(), "stream": "stdout"}).encode(),  # docker json
        b'{"level":"info","msg":"a log line"}\n',
        json.dumps({"message": {"k8s": 1, "log": b[0].decode()}}).encode(),
        a[1],  # delivered twice by an at-least-once shipper
        a[2],
        b[1],
    ]
    report = verify_stream(exported)
    assert report.ok, report.to_dict()
    chains = {c.worker: c for c in report.workers}
    assert {w: c.report.records for w, c in chains.items()} == {"a": 3, "b": 2}
    assert chains["a"].duplicates == 1
    assert report.other_lines == 1


def test_a_marked_line_that_cannot_be_read_fails_and_no_records_proves_nothing() -> None:
    damaged = lines_of("a", 2)
    damaged[1] = damaged[1][:40] + b"\n"
    report = verify_stream(damaged)
    assert not report.ok and "no readable audit record" in report.problems[0]
    assert not verify_stream([b"just a log line\n"]).ok


def test_a_different_record_under_a_seen_key_breaks_the_chain() -> None:
    a = lines_of("a", 2)
    forged = json.loads(a[1])
    forged["record"]["event"] = "forged"
    report = verify_stream([a[0], a[1], json.dumps(forged).encode()])
    assert not report.ok
    assert report.workers[0].report.first_bad_seq == 2


def test_top_shows_failing_sinks_a_full_spool_and_failures_by_reason() -> None:
    text = audit_text(
        {
            "sink_failures": {"http": {"timeout": 3, "unreachable": 2}},
            "sinks": {"http": {"failing": "timeout", "spool_bytes": 4096, "spool_full": True}},
        }
    ).plain
    assert "http failing (timeout), spool 4.0 KiB FULL" in text
    assert "http timeout 3, http unreachable 2" in text
