"""`openrtc rehearse`: the deploy on a laptop reports what operators hold us to."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def rehearse(*args: str) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "rehearse", "examples/agents", "--json", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, report, proc.stderr


def test_default_rehearsal_drops_nothing_and_keeps_new_calls_off_the_old_version() -> None:
    code, report, stderr = rehearse()
    assert code == 0, stderr[-2000:]
    assert report["ok"] is True
    assert report["calls_placed"] == report["calls_completed"] == 40
    assert report["calls_dropped"] == 0
    assert report["calls_unserved"] == 0
    assert report["post_cutover_calls_on_old"] == 0
    assert report["audit_chain_ok"] is True
    assert set(report["calls_by_version"]) <= {"v1.0.0", "v2.0.0"}  # type: ignore[arg-type]
    assert sum(report["calls_by_version"].values()) == 40  # type: ignore[attr-defined]
    assert all(c == 0 for c in report["old_worker_exit_codes"].values())  # type: ignore[attr-defined]
    assert "SIGTERM sent to 2 v1.0.0 worker(s)" in stderr


@pytest.mark.parametrize("extra", [["--rollback"], ["--no-manifest"]])
def test_rollback_and_sigterm_only_cutover(extra: list[str]) -> None:
    code, report, stderr = rehearse("--workers", "1", "--calls", "12", *extra)
    assert code == 0, stderr[-2000:]
    assert report["calls_dropped"] == 0 and report["post_cutover_calls_on_old"] == 0
    if extra == ["--rollback"]:
        assert (report["from_version"], report["to_version"]) == ("v2.0.0", "v1.0.0")
    else:
        full = list(report["sigterm_to_full_ms"].values())  # type: ignore[attr-defined]
        assert all(v is not None for v in full)


def test_a_missing_agents_dir_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "rehearse", "no/such/dir"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no/such/dir is not a directory")
    assert "Traceback" not in proc.stderr
