"""A rehearsal report fails on any problem noted during the run, not only on the counts."""

from __future__ import annotations

from openrtc.deploy.rehearsal import RehearsalReport


def _clean_report() -> RehearsalReport:
    return RehearsalReport(
        from_version="v1.0.0",
        to_version="v2.0.0",
        rollback=False,
        workers_per_version=2,
        calls_placed=40,
        calls_completed=40,
        old_worker_exit_codes={"v1.0.0-0": 0, "v1.0.0-1": 0},
        audit_chain_ok=True,
        audit_records=12,
    )


def test_clean_counts_pass() -> None:
    report = _clean_report()
    assert report.ok
    assert report.to_dict()["ok"] is True
    assert "PASS: deploy v1.0.0 -> v2.0.0" in report.render()


def test_old_workers_still_accepting_fails_the_run_even_with_clean_counts() -> None:
    report = _clean_report()
    report.problems.append("old workers still accepting 30s after the cutover began")
    assert not report.ok
    assert report.to_dict()["ok"] is False
    rendered = report.render()
    assert "FAIL: deploy v1.0.0 -> v2.0.0" in rendered
    assert "problem: old workers still accepting 30s after the cutover began" in rendered
