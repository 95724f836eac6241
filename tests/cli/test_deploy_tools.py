"""`openrtc audit verify` and `openrtc manifest sign|verify`, as an operator runs them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from openrtc.audit import AuditLog, head_path
from openrtc.cli.main import app
from openrtc.deploy.manifest import ManifestError, ManifestWatcher, verify_manifest

SECRET = "rotate-me-2026"


def openrtc(*args: str | Path) -> Result:
    """Run the real CLI app in-process with no membership secret in the environment."""
    env: dict[str, str | None] = {
        "OPENRTC_MEMBERSHIP_SECRET": None,
        "OPENRTC_MEMBERSHIP_SECRET_FILE": None,
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_one_line_error(result: Result, starts: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with AuditLog(worker_id="w-1", version="v1.0.0", path=path) as log:
        log.emit("worker.started")
        for n in range(3):
            log.emit("worker.rejected", target=f"job-{n}", result="rejected", reason="draining")
        log.emit("deployment.drain_completed")
    return path


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(f"{SECRET}\n", encoding="utf-8")
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def test_audit_verify_passes_a_whole_plain_log_and_says_what_it_does_not_prove(
    audit_file: Path,
) -> None:
    result = openrtc("audit", "verify", audit_file)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok: 5 records verified (plain sha256), last seq 5"
    assert "shows accidents, not forgery" in result.stderr

    as_json = json.loads(openrtc("audit", "verify", audit_file, "--json").stdout)
    assert as_json["ok"] is True and as_json["records"] == 5
    assert as_json["first_bad_seq"] is None


def test_audit_verify_names_the_first_edited_record(audit_file: Path) -> None:
    lines = _lines(audit_file)
    record = json.loads(lines[2])
    record["result"] = "ok"
    lines[2] = json.dumps(record)
    _write_lines(audit_file, lines)

    result = openrtc("audit", "verify", audit_file)
    assert result.exit_code == 1
    assert result.stdout.startswith("BROKEN at seq 3: line 3 (seq 3) was modified")


def test_audit_verify_names_records_deleted_from_the_end(audit_file: Path) -> None:
    _write_lines(audit_file, _lines(audit_file)[:3])

    result = openrtc("audit", "verify", audit_file)
    assert result.exit_code == 1
    assert result.stdout.strip() == (
        "BROKEN at seq 4: the log ends at seq 3 but its head file says it runs to seq 5: "
        "records 4..5 were deleted from the end"
    )
    report = json.loads(openrtc("audit", "verify", audit_file, "--json").stdout)
    assert (report["ok"], report["first_bad_seq"], report["records"]) == (False, 4, 3)


def test_audit_verify_fails_on_a_missing_head_unless_allowed(audit_file: Path) -> None:
    head_path(audit_file).unlink()
    result = openrtc("audit", "verify", audit_file)
    assert result.exit_code == 1
    assert result.stdout.startswith("BROKEN at seq 6: head file audit.jsonl.head is missing")

    allowed = openrtc("audit", "verify", audit_file, "--allow-missing-head")
    assert allowed.exit_code == 0, allowed.output
    assert "warning: head file audit.jsonl.head is missing" in allowed.stderr
    assert "cannot be detected" in allowed.stderr


def test_audit_verify_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = openrtc("audit", "verify", tmp_path / "nope.jsonl")
    assert_one_line_error(result, f"audit file {tmp_path / 'nope.jsonl'} does not exist")


def test_signed_manifest_is_accepted_by_the_verifier(secret_file: Path) -> None:
    result = openrtc(
        "manifest", "sign", "--active", "v2.0.0", "--active", "v2.1.0",
        "--secret-file", secret_file, "--ttl", "600",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = verify_manifest(result.stdout, secrets=[SECRET])
    assert manifest.active_versions == ("v2.0.0", "v2.1.0")
    assert manifest.expires_at is not None
    assert manifest.expires_at - manifest.issued_at == pytest.approx(600)
    with pytest.raises(ManifestError, match="signature is invalid"):
        verify_manifest(result.stdout, secrets=["another-secret"])


async def test_manifest_written_with_out_is_taken_by_a_workers_watcher(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "keys"
    secrets.write_text(f"k1:old-secret\nk2:{SECRET}\n", encoding="utf-8")
    out = tmp_path / "manifest.json"
    result = openrtc(
        "manifest", "sign", "--active", "v2.0.0", "--secret-file", secrets,
        "--key-id", "k2", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"wrote {out}: active v2.0.0"

    taken: list[tuple[str, ...]] = []
    rejected: list[str] = []
    watcher = ManifestWatcher(
        out,
        {"k2": SECRET},
        on_change=lambda m: taken.append(m.active_versions),
        on_rejected=rejected.append,
    )
    manifest = await watcher.poll_once()
    assert manifest is not None and manifest.key_id == "k2"
    assert (taken, rejected) == ([("v2.0.0",)], [])


def test_manifest_verify_reports_membership(tmp_path: Path, secret_file: Path) -> None:
    out = tmp_path / "manifest.json"
    signed = openrtc("manifest", "sign", "--active", "v2.0.0", "--secret-file", secret_file,
                     "--out", out)  # fmt: skip
    assert signed.exit_code == 0, signed.output

    member = openrtc("manifest", "verify", out, "--secret-file", secret_file, "--version", "v2.0.0")
    assert member.exit_code == 0, member.output
    report = json.loads(member.stdout)
    assert report["ok"] is True and report["member"] is True
    assert report["active_versions"] == ["v2.0.0"]

    retired = openrtc("manifest", "verify", out, "--secret-file", secret_file, "--version", "v1")
    assert retired.exit_code == 1
    assert json.loads(retired.stdout)["member"] is False


def test_manifest_verify_refuses_a_forged_manifest(tmp_path: Path, secret_file: Path) -> None:
    out = tmp_path / "manifest.json"
    openrtc("manifest", "sign", "--active", "v2.0.0", "--secret-file", secret_file, "--out", out)
    body, _, mac = out.read_text(encoding="utf-8").strip().rpartition(".")
    prefix, kid, _payload = body.split(".")
    payload = {"active_versions": ["v1.0.0"], "serial": 1, "issued_at": 1.0, "expires_at": None}
    swapped = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    out.write_text(f"{prefix}.{kid}.{swapped}.{mac}", encoding="utf-8")

    result = openrtc("manifest", "verify", out, "--secret-file", secret_file)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: manifest refused: membership document signature is invalid"
    )
    assert result.stdout == ""


def test_manifest_sign_takes_a_serial_and_verify_refuses_hostile_files(
    tmp_path: Path, secret_file: Path
) -> None:
    out = tmp_path / "manifest.txt"
    signed = openrtc("manifest", "sign", "--active", "v2", "--serial", "7",
                     "--secret-file", secret_file, "--out", out)  # fmt: skip
    assert signed.exit_code == 0, signed.output
    report = json.loads(openrtc("manifest", "verify", out, "--secret-file", secret_file).stdout)
    assert report["serial"] == 7 and report["key_id"] == "k1"

    for hostile in ("[" * 50_000 + "]" * 50_000, "x" * (2 << 20), '{"issued_at": ' + "9" * 400):
        out.write_text(hostile, encoding="utf-8")
        result = openrtc("manifest", "verify", out, "--secret-file", secret_file)
        assert result.exit_code == 1
        assert result.stderr.startswith("error: manifest refused: membership document")
        assert "Traceback" not in result.output


def test_tenant_sign_prints_a_room_bound_claim(tmp_path: Path) -> None:
    from openrtc.tenancy import verify_tenant

    keys = tmp_path / "tenant.keys"
    tenant_key = "t1:tenant-key-for-the-cli-0123456789abcdef"
    keys.write_text(tenant_key + "\n", encoding="utf-8")
    result = openrtc("tenant", "sign", "--tenant", "acme", "--room", "room-a", "--ttl", "60",
                     "--secret-file", keys)  # fmt: skip
    assert result.exit_code == 0, result.output
    claim = result.stdout.strip()
    secret = {"t1": tenant_key.split(":", 1)[1]}
    assert verify_tenant(claim, secret, tenant="acme", room="room-a")
    assert not verify_tenant(claim, secret, tenant="acme", room="room-b")

    unbound = openrtc("tenant", "sign", "--tenant", "acme", "--secret-file", keys)
    assert_one_line_error(unbound, "pass --room and/or --job")
    short = tmp_path / "short.keys"
    short.write_text("t1:short\n", encoding="utf-8")
    weak = openrtc("tenant", "sign", "--tenant", "acme", "--room", "r", "--secret-file", short)
    assert_one_line_error(weak, "tenant secret 't1' is 5 bytes")


@pytest.mark.parametrize(
    ("content", "starts"),
    [
        (None, "cannot read secret file"),
        (b"\n\n", "secret file"),
        (b"\xff\xfe not text", "cannot read secret file"),
    ],
    ids=["missing", "empty", "not-utf8"],
)
@pytest.mark.parametrize("command", ["sign", "verify"])
def test_a_bad_secret_file_is_one_line(
    tmp_path: Path, secret_file: Path, content: bytes | None, starts: str, command: str
) -> None:
    manifest = tmp_path / "manifest.json"
    openrtc("manifest", "sign", "--active", "v2", "--secret-file", secret_file, "--out", manifest)
    bad = tmp_path / "bad-secret"
    if content is not None:
        bad.write_bytes(content)
    args = ["--active", "v2"] if command == "sign" else [manifest]
    result = openrtc("manifest", command, *args, "--secret-file", bad)
    assert_one_line_error(result, f"{starts}")
    assert str(bad) in result.stderr


def test_no_secret_configured_is_one_line() -> None:
    result = openrtc("manifest", "sign", "--active", "v2")
    assert_one_line_error(result, "no membership secret configured")


def test_sign_with_an_unknown_key_id_is_one_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"k1:{SECRET}\n", encoding="utf-8")
    result = openrtc("manifest", "sign", "--active", "v2", "--secret-file", keys, "--key-id", "k9")
    assert_one_line_error(result, "key id 'k9' is not in the secret file")


def test_sign_into_a_missing_directory_is_one_line(tmp_path: Path, secret_file: Path) -> None:
    out = tmp_path / "no-such-dir" / "manifest.json"
    result = openrtc("manifest", "sign", "--active", "v2", "--secret-file", secret_file,
                     "--out", out)  # fmt: skip
    assert_one_line_error(result, f"cannot write {out}")
    assert not out.parent.exists()


def test_verify_of_a_missing_manifest_is_one_line(tmp_path: Path, secret_file: Path) -> None:
    missing = tmp_path / "manifest.json"
    result = openrtc("manifest", "verify", missing, "--secret-file", secret_file)
    assert_one_line_error(result, f"cannot read {missing}")


def test_the_installed_entry_point_fails_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "secret"
    bad.write_bytes(b"\xff\xfe")
    done = subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "manifest", "sign", "--active", "v2",
         "--secret-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: cannot read secret file {bad}: it is not UTF-8 text"
    assert done.stdout == ""
