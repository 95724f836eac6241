"""`openrtc rehearse --html`: one self-contained page whose timeline holds the run's events.

A small real rehearsal (real worker processes, real SIGTERM) writes the page; the SVG
is parsed back and compared with the JSON report of the same run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from openrtc.deploy.rehearsal.html import render_html
from openrtc.deploy.rehearsal.report import CallSpan, ManifestChange, RehearsalReport, WorkerSpan

SVG = "{http://www.w3.org/2000/svg}"


def svg_of(page: str) -> ET.Element:
    match = re.search(r"<svg\b.*?</svg>", page, re.DOTALL)
    assert match, "the page holds no inline SVG"
    return ET.fromstring(match.group(0))


def marks(svg: ET.Element, kind: str) -> list[dict[str, str]]:
    return [dict(g.attrib) for g in svg.iter() if g.get("class") == kind]


def peak_live(calls: list[dict[str, Any]], version: str) -> int:
    """Most calls live at once on `version`, by a sweep over the report's own spans."""
    edges = sorted(
        (t, d)
        for c in calls
        if c["version"] == version and c["start"] is not None
        for t, d in ((c["start"], 1), (c["end"], -1))
    )
    live = peak = 0
    for _, d in edges:
        live += d
        peak = max(peak, live)
    return peak


def assert_self_contained(page: str) -> None:
    for needle in ("src=", "href=", "url(", "@import", "<script", "<link", "<img"):
        assert needle not in page, f"the page would fetch or run something: {needle}"


def test_a_real_rehearsal_draws_its_events(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "rehearse", "examples/agents", "--json",
         "--workers", "1", "--calls", "12", "--html", str(out)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    page = out.read_text()
    assert_self_contained(page)
    svg = svg_of(page)

    old = [w for w in report["workers"] if w["role"] == "old"]
    assert [w["name"] for w in old] == ["v1.0.0-1"]
    sigterms = {m["data-worker"]: float(m["data-t"]) for m in marks(svg, "sigterm")}
    exits = {m["data-worker"]: m for m in marks(svg, "exit")}
    for w in report["workers"]:  # every worker's SIGTERM and exit, at the report's times
        assert sigterms[w["name"]] == pytest.approx(w["sigterm"])
        assert float(exits[w["name"]]["data-t"]) == pytest.approx(w["exited"])
        assert exits[w["name"]]["data-code"] == "0"
    assert sigterms["v1.0.0-1"] < float(exits["v1.0.0-1"]["data-t"])

    published = [(float(m["data-t"]), m["data-active"]) for m in marks(svg, "manifest")]
    assert [a for _, a in published] == ["v1.0.0", "v1.0.0,v2.0.0", "v2.0.0"]
    assert [t for t, _ in published] == [m["t"] for m in report["manifests"]]
    (cutover,) = marks(svg, "cutover")
    assert float(cutover["data-t"]) == pytest.approx(report["cutover_at"])

    drawn = {m["data-version"]: int(m["data-peak"]) for m in marks(svg, "live-calls")}
    expected = {v: peak_live(report["calls"], v) for v in report["calls_by_version"]}
    assert drawn == expected and sum(report["calls_by_version"].values()) == 12

    assert "PASS" in page and ">12</td>" in page  # the summary table: verdict, calls placed


def test_a_failed_run_shows_the_cut_and_the_problem() -> None:
    report = RehearsalReport(
        from_version="v1.0.0", to_version="v2.0.0", rollback=False, workers_per_version=1,
        calls_placed=2, calls_completed=1, calls_cancelled=1, calls_by_version={"v1.0.0": 2},
        old_worker_exit_codes={"v1.0.0-1": 3}, old_worker_exit_seconds={"v1.0.0-1": 61.0},
        duration_seconds=70.0, problems=["v1.0.0-1 cut 1 call"],
        calls=[CallSpan("AJ_1", "v1.0.0", 1.0, 5.0, "success"),
               CallSpan("AJ_2", "v1.0.0", 2.0, 63.0, "cancelled")],
        workers=[WorkerSpan("v1.0.0-1", "v1.0.0", "old", 0.0, 2.0, 63.0, 3)],
        manifests=[ManifestChange(0.0, ["v1.0.0"])],
    )  # fmt: skip
    page = render_html(report)
    assert_self_contained(page)
    svg = svg_of(page)
    (cut,) = marks(svg, "exit")
    assert cut["data-code"] == "3"
    (area,) = marks(svg, "live-calls")
    assert (area["data-version"], area["data-peak"]) == ("v1.0.0", "2")
    assert "FAIL" in page and "v1.0.0-1 cut 1 call" in page


def test_an_html_path_in_a_missing_directory_is_one_line_before_any_work() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "rehearse", "examples/agents",
         "--html", "/no/such/dir/report.html"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "error: --html /no/such/dir/report.html: no directory /no/such/dir"
    )
