"""Audit log: seq, hash chain, file continuity and tamper detection."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from openrtc.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditFileError,
    AuditLog,
    head_path,
    record_hash,
    verify_chain,
)
from openrtc.audit import verify as audit_module
from openrtc.keys import KeyRing


def _write_events(path: Path, count: int) -> list[AuditEvent]:
    with AuditLog(worker_id="w-1", version="v1.0.0", path=path) as log:
        return [log.emit("membership.changed", target=f"call-{i}", index=i) for i in range(count)]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_seq_is_monotonic_and_chained_in_memory() -> None:
    seen: list[AuditEvent] = []
    log = AuditLog(worker_id="w-1", version="v2.0.0", sink=seen.append)
    first = log.emit("worker.started")
    second = log.emit("deployment.drain_started", actor="sigterm", in_flight=3)
    third = log.emit("deployment.drain_completed", version="v2.0.1")

    assert log.flush(5), "the callable sink gets every record, on its own thread"
    assert [e.seq for e in seen] == [1, 2, 3]
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert len({first.hash, second.hash, third.hash}) == 3
    assert first.version == "v2.0.0"
    assert third.version == "v2.0.1"
    assert second.actor == "sigterm"
    assert first.actor == "system" and first.result == "ok"


def test_to_dict_is_flat_and_hash_covers_it() -> None:
    log = AuditLog(worker_id="w-9", version="v1", sink=lambda event: None)
    event = log.emit("worker.rejected", target="job-7", result="rejected", reason="draining")
    record = event.to_dict()

    assert record["reason"] == "draining"
    assert "fields" not in record
    assert record["worker_id"] == "w-9"
    assert record["host"]
    assert record["hash"] == record_hash(record)
    record["reason"] = "capacity"
    assert record["hash"] != record_hash(record)


def test_worker_id_and_version_are_settable_after_construction() -> None:
    log = AuditLog(sink=lambda event: None)
    before = log.emit("worker.started")
    log.worker_id = "AW_123"
    log.version = "v3"
    after = log.emit("membership.changed")
    assert (before.worker_id, before.version) == ("", "")
    assert (after.worker_id, after.version) == ("AW_123", "v3")


@pytest.mark.parametrize("name", ["seq", "hash", "prev_hash", "host", "timestamp", "event"])
def test_reserved_field_names_are_rejected(name: str) -> None:
    log = AuditLog(sink=lambda event: None)
    with pytest.raises(ValueError, match=repr(name)):
        log.emit("worker.started", **{name: "x"})
    assert log.last_seq == 0


def test_event_dataclass_rejects_shadowing_field() -> None:
    with pytest.raises(ValueError, match="'worker_id'"):
        AuditEvent(1, 0.0, "e", "a", "t", "ok", "v", "w", "h", {"worker_id": "x"}, "0", "0")


def test_raising_sink_never_fails_emit_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: AuditEvent) -> None:
        raise RuntimeError("collector is down")

    log = AuditLog(sink=broken)
    with caplog.at_level(logging.ERROR, logger="openrtc"):
        first = log.emit("worker.started")
        second = log.emit("deployment.drain_started")
        log.flush(5)

    assert (first.seq, second.seq) == (1, 2)
    assert log.sink_failures == 2
    assert log.failures[("sink", "RuntimeError")] == 2
    assert "seq 1" in caplog.text, "a run of failures is logged once, at its first record"
    assert [e.seq for e in log.recent(10)] == [1, 2]


@pytest.mark.serial
def test_a_hanging_sink_never_holds_up_emit() -> None:
    release = threading.Event()
    got: list[int] = []

    def hangs(event: AuditEvent) -> None:
        release.wait(10)
        got.append(event.seq)

    log = AuditLog(sink=hangs)
    log._sink._timeout = 0.05  # type: ignore[union-attr]
    started = time.monotonic()
    for _ in range(200):
        log.emit("worker.rejected", reason="draining")
    time.sleep(0.1)
    log.emit("worker.rejected", reason="draining")
    assert time.monotonic() - started < 1.0, "emit waited for the sink"
    assert log.failures[("sink", "timeout")] == 1
    release.set()
    assert log.flush(5)
    assert got == list(range(1, 202)), "every record, in order, once the sink returns"


def test_default_sink_is_the_openrtc_audit_logger(caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(worker_id="w-1", version="v1")
    with caplog.at_level(logging.INFO, logger="openrtc.audit"):
        event = log.emit("deployment.rolled_back", target="v2", to_version="v1")
    records = [r for r in caplog.records if r.name == "openrtc.audit"]
    assert len(records) == 1
    assert json.loads(records[0].getMessage()) == event.to_dict()


def test_recent_is_bounded_and_ordered() -> None:
    log = AuditLog(sink=lambda event: None, history=5)
    for _ in range(12):
        log.emit("worker.rejected")
    assert [e.seq for e in log.recent(3)] == [10, 11, 12]
    assert [e.seq for e in log.recent(100)] == [8, 9, 10, 11, 12]
    assert log.recent(0) == []


def test_file_sink_writes_verifiable_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = _write_events(path, 4)
    lines = _lines(path)
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]
    report = verify_chain(path)
    assert report.ok and report.records == 4 and report.first_bad_seq is None


def test_file_sink_continues_seq_and_chain_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first_run = _write_events(path, 3)
    with AuditLog(worker_id="w-2", version="v2.0.0", path=path) as log:
        assert log.last_seq == 3
        resumed = log.emit("worker.started")
    assert resumed.seq == 4
    assert resumed.prev_hash == first_run[-1].hash
    report = verify_chain(path)
    assert report.ok and report.records == 4


def test_second_writer_on_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path=path), pytest.raises(AuditFileError, match="in use"):
        AuditLog(path=path)


def test_reopen_refuses_garbled_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 2)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"seq": 3, "trunc')
    with pytest.raises(AuditFileError, match="truncated or garbled"):
        AuditLog(path=path)


def test_failed_file_write_keeps_seq_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path=path)
    log.emit("worker.started")
    log.close()
    after = log.emit("deployment.drain_started")
    assert after.seq == 2
    assert log.sink_failures == 1
    assert len(_lines(path)) == 1


def test_verify_chain_on_empty_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    report = verify_chain(empty)
    assert report.ok and report.records == 0 and "empty" in report.reason
    with pytest.raises(FileNotFoundError, match="does not exist"):
        verify_chain(tmp_path / "missing.jsonl")


def test_verify_chain_detects_deleted_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 5)
    lines = _lines(path)
    del lines[2]
    _write_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 4
    assert report.records == 2


def test_verify_chain_detects_deleted_first_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 5)
    del_first = _lines(path)[1:]
    _write_lines(path, del_first)
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 2


def test_verify_chain_detects_edited_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 5)
    lines = _lines(path)
    record = json.loads(lines[1])
    record["result"] = "rejected"
    lines[1] = json.dumps(record)
    _write_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 2
    assert "modified" in report.reason


def test_verify_chain_detects_edit_with_recomputed_hash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 5)
    lines = _lines(path)
    record = json.loads(lines[1])
    record["target"] = "someone-else"
    record["hash"] = record_hash(record)
    lines[1] = json.dumps(record)
    _write_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "chain" in report.reason


def test_verify_chain_detects_reordered_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 5)
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    _write_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 4


def test_verify_chain_detects_inserted_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 4)
    lines = _lines(path)
    forged = json.loads(lines[1])
    forged["seq"] = 3
    forged["prev_hash"] = forged["hash"]
    forged["event"] = "deployment.drain_completed"
    forged["hash"] = record_hash(forged)
    lines.insert(2, json.dumps(forged))
    _write_lines(path, lines)
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert report.records == 3


def test_verify_chain_detects_garbled_and_truncated_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 4)
    lines = _lines(path)
    _write_lines(path, [*lines[:2], "{not json", *lines[3:]])
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "line 3" in report.reason

    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40], encoding="utf-8")
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 4
    assert report.records == 3


def test_concurrent_emits_get_unique_contiguous_seqs(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path=path)
    threads_count, per_thread = 8, 40
    results: list[list[int]] = [[] for _ in range(threads_count)]
    barrier = threading.Barrier(threads_count)

    def worker(slot: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            results[slot].append(log.emit("worker.rejected", slot=slot, i=i).seq)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()

    all_seqs = sorted(seq for chunk in results for seq in chunk)
    assert all_seqs == list(range(1, threads_count * per_thread + 1))
    for chunk in results:
        assert chunk == sorted(chunk)
    report = verify_chain(path)
    assert report.ok and report.records == threads_count * per_thread


def test_file_sink_keeps_a_head_with_the_last_seq_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = _write_events(path, 3)
    head = json.loads(head_path(path).read_text(encoding="utf-8"))
    assert head == {"seq": 3, "hash": events[-1].hash}
    assert head_path(path) == tmp_path / "audit.jsonl.head"
    report = verify_chain(path)
    assert report.ok and len(report.warnings) == 1
    assert "plain sha256" in report.warnings[0]


def test_verify_chain_detects_deleted_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 5)
    _write_lines(path, _lines(path)[:3])
    report = verify_chain(path)
    assert not report.ok
    assert report.records == 3
    assert report.first_bad_seq == 4
    assert "ends at seq 3" in report.reason
    assert "runs to seq 5" in report.reason


def test_verify_chain_detects_log_emptied_behind_its_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 2)
    path.write_text("", encoding="utf-8")
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 1
    assert "ends at seq 0" in report.reason


def test_resume_after_tail_deletion_never_reuses_a_seq(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    original = _write_events(path, 5)
    _write_lines(path, _lines(path)[:3])
    with caplog.at_level(logging.ERROR, logger="openrtc"), AuditLog(path=path) as log:
        assert log.last_seq == 5
        resumed = log.emit("worker.started")
    assert resumed.seq == 6
    assert resumed.prev_hash == original[-1].hash
    assert "deleted from the end" in caplog.text
    seqs = [json.loads(line)["seq"] for line in _lines(path)]
    assert seqs == [1, 2, 3, 6]
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 6
    assert "where 4 was expected" in report.reason


def test_a_head_behind_the_log_fails_until_a_writer_catches_it_up(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 3)
    stale = head_path(path).read_bytes()
    with AuditLog(path=path) as log:
        log.emit("deployment.drain_started")
        log.emit("deployment.drain_completed")
    head_path(path).write_bytes(stale)
    report = verify_chain(path)
    assert not report.ok and report.records == 5
    assert report.first_bad_seq == 4
    assert "stops at seq 3" in report.reason and "not covered" in report.reason

    with AuditLog(path=path) as log:
        assert log.last_seq == 5
        assert log.emit("worker.started").seq == 6
    assert verify_chain(path).ok


def test_rewritten_end_with_a_valid_chain_is_caught_by_the_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 5)
    _write_lines(path, _lines(path)[:3])
    head = head_path(path)
    kept = head.read_bytes()
    head.unlink()
    with AuditLog(worker_id="w-1", version="v1.0.0", path=path) as log:
        log.emit("deployment.drain_completed", target="forged-4")
        log.emit("deployment.drain_completed", target="forged-5")
    head.write_bytes(kept)
    report = verify_chain(path)
    assert not report.ok
    assert report.first_bad_seq == 5
    assert "rewritten" in report.reason


def test_missing_head_fails_unless_allowed_and_then_says_what_is_unproven(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 3)
    head_path(path).unlink()
    report = verify_chain(path)
    assert not report.ok and report.records == 3
    assert report.first_bad_seq == 4
    assert "audit.jsonl.head is missing" in report.reason

    allowed = verify_chain(path, allow_missing_head=True)
    assert allowed.ok
    assert any("cannot be detected" in w for w in allowed.warnings)

    with AuditLog(path=path) as log:
        assert log.emit("worker.started").seq == 4
    assert verify_chain(path).ok


def test_garbled_head_warns_in_verify_and_stops_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_events(path, 2)
    head_path(path).write_text('{"seq": "two"}', encoding="utf-8")
    report = verify_chain(path)
    assert not report.ok
    assert "unreadable (it has no positive integer seq)" in report.reason
    with pytest.raises(AuditFileError, match="move it aside"):
        AuditLog(path=path)


def test_failed_head_write_is_counted_and_the_record_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path=path) as log:
        head_path(path).mkdir()
        log.emit("worker.started")
        assert log.flush()
        assert log.sink_failures == 1
    assert len(_lines(path)) == 1
    report = verify_chain(path)
    assert not report.ok
    assert "unreadable" in report.reason


def _append_while_scanning(
    monkeypatch: pytest.MonkeyPatch, log: AuditLog, during: int, after: int
) -> None:
    """Make a live writer append `during` records before the scan and `after` behind it."""
    real_scan = audit_module._scan_chain

    calls: list[Path] = []

    def scan_with_writer(file: Path, keys: KeyRing | None) -> audit_module._Scan:
        calls.append(file)
        if len(calls) > 1:
            return real_scan(file, keys)
        for _ in range(during):
            log.emit("worker.rejected")
        assert log.flush()
        scan = real_scan(file, keys)
        for _ in range(after):
            log.emit("worker.rejected")
        assert log.flush()
        return scan

    monkeypatch.setattr(audit_module, "_scan_chain", scan_with_writer)


@pytest.mark.parametrize("after", [0, 1, 3])
def test_verify_accepts_a_log_its_writer_extends_while_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path=path) as log:
        log.emit("worker.started")
        _append_while_scanning(monkeypatch, log, during=3, after=after)
        report = verify_chain(path)
    assert report.ok, report.reason
    assert report.records in (4, 4 + after)


def test_identical_refusals_are_one_record_plus_a_count_per_interval(tmp_path: Path) -> None:
    seen: list[AuditEvent] = []
    log = AuditLog(sink=seen.append, refusal_interval_s=0.3)
    first = log.emit_refusal("worker.rejected", reason="tenant_unsigned", source="room-1", n=0)
    assert first is not None and first.fields["source"] == "room-1"
    for n in range(49):
        counted = log.emit_refusal("worker.rejected", reason="tenant_unsigned", source="room-1")
        assert counted is None, n
    other = log.emit_refusal("worker.rejected", reason="tenant_unsigned", source="room-2")
    assert other is not None
    time.sleep(0.35)
    again = log.emit_refusal("worker.rejected", reason="tenant_unsigned", source="room-1")
    assert again is not None
    assert log.flush(5)
    repeats = [e for e in seen if e.event == "audit.refusals_repeated"]
    assert [(e.fields["source"], e.fields["count"]) for e in repeats] == [("room-1", 49)]
    assert repeats[0].fields["refused_event"] == "worker.rejected"
    assert [e.event for e in seen].count("worker.rejected") == 3
    log.close()


def test_refusal_kinds_are_bounded_and_pending_counts_are_written_at_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path=path, refusal_interval_s=60) as log:
        for n in range(600):
            log.emit_refusal("worker.rejected", reason="draining", source=f"room-{n}")
    records = [json.loads(line) for line in _lines(path)]
    full = [r for r in records if r["event"] == "worker.rejected"]
    assert len(full) == 257 and full[-1]["source"] == "*"
    (repeated,) = [r for r in records if r["event"] == "audit.refusals_repeated"]
    assert (repeated["source"], repeated["count"]) == ("*", 600 - 257)
    assert verify_chain(path).ok


def test_outsider_sized_values_are_capped_in_the_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path=path) as log:
        event = log.emit(
            "worker.rejected", target="t" * 300_000, detail="d" * 300_000, items=list(range(500))
        )
    assert len(event.to_json()) < 3_000
    assert event.fields["detail"].endswith(f"...(+{300_000 - 512} chars)")
    assert path.stat().st_size < 3_000
    assert verify_chain(path).ok


@pytest.mark.serial
def test_a_slow_output_never_slows_emit_and_gets_every_record_in_order(tmp_path: Path) -> None:
    batches: list[list[int]] = []

    def slow(events: Sequence[AuditEvent]) -> None:
        time.sleep(0.2)
        batches.append([e.seq for e in events])

    log = AuditLog(path=tmp_path / "audit.jsonl", durability="os")
    log.attach(slow, "slow")
    started = time.monotonic()
    for n in range(100):
        log.emit("worker.rejected", n=n)
    assert time.monotonic() - started < 0.15
    assert log.flush(timeout=10)
    assert [seq for batch in batches for seq in batch] == list(range(1, 101))
    assert len(batches) < 100
    log.close()
    assert verify_chain(tmp_path / "audit.jsonl").ok


def test_a_plain_file_chain_says_once_that_it_is_only_accident_evident(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openrtc")
    with AuditLog(path=tmp_path / "audit.jsonl") as log:
        for _ in range(5):
            log.emit("worker.rejected")
    said = [r for r in caplog.records if "shows accidents, not forgery" in r.getMessage()]
    assert len(said) == 1 and "OPENRTC_AUDIT_KEY_FILE" in said[0].getMessage()
    caplog.clear()
    with AuditLog(path=tmp_path / "sealed.jsonl", keys=KeyRing({"a1": "k" * 32})) as log:
        assert log.emit("worker.started").kid == "a1" and log.keyed
    assert "not forgery" not in caplog.text
