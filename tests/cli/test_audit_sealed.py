"""`openrtc audit verify --key-file`: an attacker who can write the files but holds no key."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from openrtc.audit import AuditLog, head_path, record_hash
from openrtc.cli.main import app
from openrtc.keys import KeyRing

KEY = "a1:audit-key-one-2026"


def verify(*args: str | Path) -> Result:
    env: dict[str, str | None] = {"OPENRTC_AUDIT_KEY_FILE": None, "COLUMNS": "200"}
    return CliRunner().invoke(app, ["audit", "verify", *[str(a) for a in args]], env=env)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.keys"
    path.write_text(KEY + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sealed(tmp_path: Path, key_file: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    keys = KeyRing.from_file(key_file, what="test")
    with AuditLog(worker_id="w-1", version="v1.0.0", path=path, keys=keys) as log:
        log.emit("worker.started")
        for n in range(3):
            log.emit("worker.rejected", target=f"job-{n}", result="refused", reason="draining")
        log.emit("deployment.drain_completed")
    return path


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, records: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")


def _canonical(record: dict[str, object]) -> bytes:
    unsigned = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_genuine_sealed_log_passes_with_its_key(sealed: Path, key_file: Path) -> None:
    result = verify(sealed, "--key-file", key_file)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok: 5 records verified (HMAC-sealed), last seq 5"
    assert result.stderr == ""
    assert all(r["kid"] == "a1" for r in _records(sealed))
    assert json.loads(head_path(sealed).read_text())["kid"] == "a1"


def test_a_chain_recomputed_as_plain_sha256_fails_at_its_first_record(
    sealed: Path, key_file: Path
) -> None:
    records = _records(sealed)
    prev = "0" * 64
    for record in records:
        record.pop("kid")
        if record["seq"] == 3:
            record["result"] = "ok"
        record["prev_hash"] = prev
        record["hash"] = record_hash(record)
        prev = str(record["hash"])
    _write(sealed, records)
    head_path(sealed).write_text(json.dumps({"seq": 5, "hash": prev}))

    assert verify(sealed).exit_code == 0  # without the key a plain forgery looks whole
    result = verify(sealed, "--key-file", key_file)
    assert result.exit_code == 1
    assert result.stdout.startswith("BROKEN at seq 1: line 1 (seq 1) is not sealed")


def test_a_chain_resealed_with_a_guessed_key_fails_at_the_edited_record(
    sealed: Path, key_file: Path
) -> None:
    records = _records(sealed)
    guess = b"audit-key-guess"
    prev = str(records[1]["hash"])
    for record in records[2:]:
        if record["seq"] == 3:
            record["reason"] = "operator_request"
        record["prev_hash"] = prev
        record["hash"] = hmac.new(
            guess, b"openrtc-audit/1\n" + _canonical(record), hashlib.sha256
        ).hexdigest()
        prev = str(record["hash"])
    _write(sealed, records)
    head_path(sealed).write_text(json.dumps({"seq": 5, "hash": prev, "kid": "a1", "mac": "0" * 64}))

    result = verify(sealed, "--key-file", key_file, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 1
    assert report["first_bad_seq"] == 3
    assert "does not carry a valid HMAC" in report["reason"]


@pytest.mark.parametrize("head", ["left", "deleted", "rewritten"])
def test_a_cut_tail_fails_naming_the_first_missing_record(
    sealed: Path, key_file: Path, head: str
) -> None:
    records = _records(sealed)[:3]
    _write(sealed, records)
    if head == "deleted":
        head_path(sealed).unlink()
    elif head == "rewritten":  # the attacker cannot seal a head for seq 3
        head_path(sealed).write_text(json.dumps({"seq": 3, "hash": records[-1]["hash"]}))

    result = verify(sealed, "--key-file", key_file)
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("BROKEN at seq 4: ")


def test_a_missing_head_fails_and_allowing_it_says_what_is_not_proven(
    sealed: Path, key_file: Path
) -> None:
    head_path(sealed).unlink()
    result = verify(sealed, "--key-file", key_file)
    assert result.exit_code == 1
    assert result.stdout.startswith("BROKEN at seq 6: head file audit.jsonl.head is missing")

    allowed = verify(sealed, "--key-file", key_file, "--allow-missing-head")
    assert allowed.exit_code == 0
    assert "records deleted from the end of the log cannot be detected" in allowed.stderr


def test_a_sealed_log_without_its_key_is_not_passed(sealed: Path) -> None:
    result = verify(sealed)
    assert result.exit_code == 1
    assert "verify with the audit key file" in result.stdout


def test_rotation_first_key_signs_and_every_key_verifies(
    tmp_path: Path, sealed: Path, key_file: Path
) -> None:
    rotated = tmp_path / "rotated.keys"
    rotated.write_text(f"b2:audit-key-two-2027\n{KEY}\n", encoding="utf-8")
    with AuditLog(path=sealed, keys=KeyRing.from_file(rotated, what="test")) as log:
        assert log.emit("worker.started").kid == "b2"
    assert [r["kid"] for r in _records(sealed)] == ["a1"] * 5 + ["b2"]

    assert verify(sealed, "--key-file", rotated).exit_code == 0
    old_only = verify(sealed, "--key-file", key_file)
    assert old_only.exit_code == 1
    assert old_only.stdout.startswith("BROKEN at seq 6: line 6 (seq 6) names audit key 'b2'")
    new_only = tmp_path / "new-only.keys"
    new_only.write_text("b2:audit-key-two-2027\n", encoding="utf-8")
    assert verify(sealed, "--key-file", new_only).stdout.startswith("BROKEN at seq 1: ")


def test_a_bad_key_file_is_one_line(sealed: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.keys"
    result = verify(sealed, "--key-file", missing)
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: --key-file: cannot read key file {missing}")
    assert "Traceback" not in result.output
