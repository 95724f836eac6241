"""docs/benchmarks.md generation: tables, verdict lines, and the whole page from JSON."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import report

MACHINE = {
    "cpu": "Test CPU 3000",
    "cores": 2,
    "ram_gb": 24.0,
    "python": "3.11.7",
    "livekit_agents": "1.8.9",
    "openrtc": {"commit": "abc1234", "src_files_changed_since_commit": ["src/x.py"]},
    "load_avg_at_start": [0.5, 0.4, 0.3],
}


def _run(mode: str, n: int, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mode": mode,
        "n": n,
        "status": "held",
        "reason": "",
        "idle_pss_mb": 350.0,
        "pss_mb": 400.0,
        "pss_per_call_mb": 2.0,
        "cpu_pct": 50.0,
        "cpu_per_call_pct": 2.0,
        "loop_lag_p50_ms": 1.0,
        "loop_lag_p99_ms": 10.0,
        "vad_frames_pushed": 1000,
        "vad_missed_pct": 0.0,
        "mic_missed_pct": 0.0,
    }
    base.update(kw)
    return base


DENSITY = {
    "benchmark": "density",
    "date": "2026-11-27T06:00:00+00:00",
    "machine": MACHINE,
    "command": "PYTHONPATH=src .venv/bin/python bench/density.py",
    "duration_s": 800.0,
    "config": {"window_s": 15.0, "modes": ["coroutine", "process"], "worker_args": []},
    "definitions": {"pss_mb": "PSS summed over the tree"},
    "runs": [
        _run("coroutine", 25, pss_mb=450.0, other_cpu_pct=12.0),
        _run("process", 25, pss_mb=3000.0, pss_per_call_mb=60.0),
        _run("coroutine", 50, loop_lag_p99_ms=150.0, vad_missed_pct=3.5, status="held"),
        _run("process", 50, status="skipped", reason="process stopped at N=25: | pipes |"),
    ],
}

ADMISSION = {
    "benchmark": "admission",
    "date": "2026-11-27T06:10:00+00:00",
    "machine": MACHINE,
    "command": "PYTHONPATH=src .venv/bin/python bench/admission.py",
    "duration_s": 120.0,
    "other_cpu_pct": 3.0,
    "summary": {"bursts_run": 2, "bursts_exact": 2, "answer_p50_ms": 1.0, "answer_p99_ms": 3.0},
    "rows": [
        {
            "cap": 5,
            "burst": 20,
            "repetitions": 2,
            "expected": 5,
            "admitted": [5, 5],
            "exact_every_time": True,
            "offers": 40,
            "answer_p50_ms": 1.0,
            "answer_p99_ms": 3.0,
            "answer_max_ms": 4.0,
        }
    ],
}

DEPLOY = {
    "benchmark": "deploy",
    "date": "2026-11-27T06:20:00+00:00",
    "machine": MACHINE,
    "command": "PYTHONPATH=src .venv/bin/python bench/deploy.py",
    "duration_s": 200.0,
    "config": {
        "deploys": 10,
        "workers_per_version": 2,
        "call_rate_per_s": 4.0,
        "call_hold_s": [1.0, 5.0],
        "call_mode": "text",
    },
    "summary": {
        "deploys": 10,
        "old_workers": 20,
        "sigterm_to_full_p50_ms": 20.0,
        "sigterm_to_full_p99_ms": 60.0,
        "sigterm_to_full_max_ms": 61.0,
        "last_call_end_to_exit_p50_ms": 250.0,
        "last_call_end_to_exit_p99_ms": 700.0,
        "last_call_end_to_exit_max_ms": 710.0,
        "calls_placed": 400,
        "calls_completed": 400,
        "calls_dropped": 0,
        "calls_unserved": 0,
        "calls_failed": 0,
        "calls_cancelled": 0,
        "calls_unfinished": 0,
        "calls_accounted": True,
        "calls_before_first_deploy": 16,
        "calls_taken_by_old_after_sigterm": 0,
        "final_fleet_nonzero_exits": 0,
        "nonzero_exits": 0,
    },
    "deploys": [
        {
            "deploy": 1,
            "from_version": "v1.0.0",
            "to_version": "v2.0.0",
            "ok": True,
            "calls_placed": 40,
            "calls_completed": 40,
            "calls_failed": 0,
            "calls_dropped": 0,
            "calls_unserved": 0,
            "sigterm_to_full_ms": {"v1-1": 20.0, "v1-2": None},
            "last_call_end_to_exit_ms": {"v1-1": 250.0, "v1-2": 700.0},
            "exit_codes": {"v1-1": 0, "v1-2": 0},
            "calls_live_at_sigterm": {"v1-1": 7, "v1-2": 5},
            "offers_after_sigterm": {"v1-1": 2, "v1-2": 1},
            "calls_taken_after_sigterm": {"v1-1": 0, "v1-2": 0},
        }
    ],
}


def test_markdown_table_escapes_pipes_and_formats_cells() -> None:
    text = report.markdown_table(["a", "b|c"], [[1.25, None], [True, "x|y"]])
    lines = text.splitlines()
    assert lines[0] == "| a | b\\|c |"
    assert lines[1] == "| --- | --- |"
    assert lines[2] == "| 1.2 | n/a |"
    assert lines[3] == "| yes | x\\|y |"


def test_markdown_table_refuses_a_ragged_row() -> None:
    with pytest.raises(ValueError, match="2 columns"):
        report.markdown_table(["a", "b"], [[1]])


def test_pss_ratio_verdict_follows_the_numbers() -> None:
    met = report.density_verdicts(DENSITY)[0]
    assert met.met is True
    assert "6.7x" in met.detail  # 3000 / 450
    low = copy.deepcopy(DENSITY)
    low["runs"][1]["pss_mb"] = 1800.0
    missed = report.density_verdicts(low)[0]
    assert missed.met is False
    assert "4.0x" in missed.detail
    assert "idle worker" in missed.detail


def test_lag_and_vad_verdict_says_what_was_missed() -> None:
    verdict = report.density_verdicts(DENSITY)[1]
    assert verdict.met is False
    assert "<= 150 ms" in verdict.detail
    assert "3.50%" in verdict.detail
    assert verdict.line().startswith("- **MISSED**")


def test_a_target_that_was_not_run_is_not_called_met() -> None:
    no_runs = dict(DENSITY, runs=[])
    verdicts = report.density_verdicts(no_runs)
    assert len(verdicts) >= 4 and all(v.met is None for v in verdicts)
    assert report.density_verdicts(no_runs)[0].line().startswith("- **NOT MEASURED**")


def test_admission_verdicts_name_an_inexact_burst() -> None:
    assert [v.met for v in report.admission_verdicts(ADMISSION)] == [True, True]
    bad = copy.deepcopy(ADMISSION)
    bad["rows"][0]["exact_every_time"] = False
    bad["rows"][0]["admitted"] = [5, 6]
    bad["summary"]["answer_p99_ms"] = 12.0
    exact, latency = report.admission_verdicts(bad)
    assert exact.met is False and "cap 5 burst 20: [5, 6]" in exact.detail
    assert latency.met is False and "12.00 ms" in latency.detail


def test_deploy_verdicts_and_too_few_deploys() -> None:
    full, tail, dropped = report.deploy_verdicts(DEPLOY)
    assert full.met is True
    assert tail.met is False and "700.0" in tail.detail
    assert dropped.met is True
    few = copy.deepcopy(DEPLOY)
    few["summary"]["deploys"] = 3
    assert report.deploy_verdicts(few)[2].met is False
    assert "only 3 of 10" in report.deploy_verdicts(few)[2].detail
    assert "every call accounted for" in dropped.detail


def test_deploy_verdict_misses_when_a_call_is_not_accounted_for() -> None:
    open_call = copy.deepcopy(DEPLOY)
    open_call["summary"].update(calls_unfinished=1, calls_accounted=False)
    dropped = report.deploy_verdicts(open_call)[2]
    assert dropped.met is False
    assert "NOT every call accounted for" in dropped.detail


def test_deploy_section_shows_the_rollout_and_what_old_workers_did_after_sigterm() -> None:
    text = report.deploy_section(DEPLOY)
    assert "10 consecutive rolling deploys of one fleet of 2 workers" in text
    assert "text-mode simulated calls of 1.0-5.0 s at 4.0/s" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert "| v1.0.0 -> v2.0.0 | yes | 40 |" in row
    assert "| 7, 5 | 3 (0) | 20, n/a | 250, 700 | 0, 0 |" in row
    assert "placed 400, completed 400" in text and "accounted for: yes" in text
    assert "16 of them placed before the first deploy" in text


def test_the_page_is_generated_from_the_json_files(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for name, data in (("density", DENSITY), ("admission", ADMISSION), ("deploy", DEPLOY)):
        (results / f"{name}.json").write_text(json.dumps(data))
    (results / "density-quick.json").write_text("not json: never read")
    out = tmp_path / "benchmarks.md"
    report.main(["--results", str(results), "--out", str(out)])
    page = out.read_text()
    assert page.startswith("# Benchmarks")
    for section in ("## Density", "## Admission", "## Deploy"):
        assert section in page
    assert "`PYTHONPATH=src .venv/bin/python bench/deploy.py`" in page
    assert "Test CPU 3000, 2 cores" in page
    assert "abc1234 plus uncommitted changes to 1 src files" in page
    assert "2026-11-27T06:10:00+00:00" in page
    assert "process stopped at N=25: \\| pipes \\|" in page
    assert "other processes on the machine during the run: 3% of a core" in page
    assert "during the busiest steady window: 12% of a core" in page
    glance = page.split("## Density")[0]
    assert glance.count("**MET**") == 6 and glance.count("**MISSED**") == 2
    assert "**NOT MEASURED**: offered 130 calls" in glance


def test_a_missing_result_says_how_to_produce_it(tmp_path: Path) -> None:
    (tmp_path / "admission.json").write_text(json.dumps(ADMISSION))
    page = report.render(report.load(tmp_path))
    assert "No results: run `bench/density.py`" in page
    assert "No results: run `bench/deploy.py`" in page
    assert "## Admission" in page


def test_vad_implementation_names() -> None:
    assert report.vad_impl({"livekit.plugins.silero.vad.VAD": 4}) == "stock Silero"
    assert report.vad_impl({"openrtc.vad.shared.SessionVAD": 4}) == "openrtc batched (SessionVAD)"
    assert report.vad_impl({}) == "n/a"


def _with_summary(**coroutine: Any) -> dict[str, Any]:
    result = copy.deepcopy(DENSITY)
    result["summary"] = {
        "coroutine": {
            "largest_n_kept_up": 75,
            "cpu_per_call_pct_at_largest": 1.4,
            "cpu_per_call_pct_at_25": 1.5,
            "first_n_missed": 100,
            "ns_measured": [10, 25, 50, 75, 100],
            **coroutine,
        },
        "coroutine-stock-vad": {
            "largest_n_kept_up": 25,
            "cpu_per_call_pct_at_largest": 4.5,
            "cpu_per_call_pct_at_25": 4.5,
            "first_n_missed": 50,
            "ns_measured": [10, 25, 50],
        },
    }
    return result


def test_shared_vad_targets_compare_with_the_stock_vad_of_the_same_run() -> None:
    cpu, kept, *_ = report.shared_vad_verdicts(
        _with_summary(cpu_per_call_pct_at_25=0.9, largest_n_kept_up=100, first_n_missed=125)
    )
    assert cpu.met is True and "4.50% with the stock" in cpu.detail and "5.0x less" in cpu.detail
    assert kept.met is True and "largest N kept up: 100" in kept.detail
    assert "first N that missed: 125" in kept.detail


def test_shared_vad_targets_missed_when_the_numbers_miss() -> None:
    cpu, kept, *_ = report.shared_vad_verdicts(
        _with_summary(cpu_per_call_pct_at_25=1.8, largest_n_kept_up=50, first_n_missed=75)
    )
    assert (cpu.met, kept.met) == (False, False)
    none = report.shared_vad_verdicts(_with_summary(largest_n_kept_up=None))[1]
    assert none.met is False and "coroutine: none" in none.detail
    assert "best mode coroutine-stock-vad: largest N kept up: 25" in none.detail


def test_keep_up_table_lists_every_mode() -> None:
    text = "\n".join(report.keep_up_section(_with_summary()))
    assert "| coroutine | 75 | 1.40 | 1.50 | 100 |" in text
    assert "| coroutine-stock-vad | 25 | 4.50 | 4.50 | 50 |" in text
    assert report.keep_up_section(DENSITY) == []


def test_the_n50_verdict_names_the_stock_vad_run_beside_it() -> None:
    result = copy.deepcopy(DENSITY)
    result["runs"][2].update(loop_lag_p99_ms=7.5, vad_missed_pct=0.0)
    result["runs"].append(
        _run("coroutine-stock-vad", 50, loop_lag_p99_ms=500.0, vad_missed_pct=100.0)
    )
    verdict = report.density_verdicts(result)[1]
    assert verdict.met is True
    assert (
        "with livekit's stock per-call Silero streams the same N gives loop lag p99 <= 500 ms"
        in (verdict.detail)
    )
    assert "100.00% of VAD frames late" in verdict.detail


def test_the_density_table_shows_what_callers_heard_and_the_workload() -> None:
    result = copy.deepcopy(DENSITY)
    result["config"]["workload"] = {
        "seed": 4,
        "agents": ["sales", "support"],
        "turns_per_call": [3, 10],
        "pause_s": [0.3, 2.0],
        "hold_s": [0.5, 3.0],
        "mean_dispatch_gap_s": 0.2,
    }
    result["runs"][0].update(
        turns_measured=120,
        turn_latency_p50_ms=1200.0,
        turn_latency_p95_ms=2400.0,
        turn_latency_p95_over_lone_ms=35.0,
        calls_failed=0,
        vad_lag_warnings=2,
    )
    text = report.density_section(result)
    assert "| turns | turn p50 ms | turn p95 ms | turn p95 over a lone call ms |" in text
    assert "| 120 | <= 1200 | <= 2400 | 35 | 0 | 2 |" in text
    assert "seeded workload (seed 4): agents sales, support drawn per call, 3-10 turns" in text
    assert "no VAD-lag warning from the worker" in text


def test_the_n50_verdict_is_missed_when_the_worker_warned_its_vad_is_behind() -> None:
    result = copy.deepcopy(DENSITY)
    result["runs"][2].update(loop_lag_p99_ms=7.5, vad_missed_pct=0.0, vad_lag_warnings=3)
    verdict = report.density_verdicts(result)[1]
    assert verdict.met is False
    assert "VAD-lag warnings from the worker 3" in verdict.detail


def _burst(processes: int = 1, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "processes": processes,
        "offered": 130,
        "dispatch_span_s": 5.0,
        "admitted": 80,
        "not_admitted": 50,
        "refused_by_answer": 30,
        "never_offered_full": 20,
        "offer_unanswered": 0,
        "not_admitted_other": 0,
        "refusal_reasons": {"overloaded": 41},
        "calls_failed": 0,
        "failed_jobs": {},
        "kept_up": True,
        "status": "run",
        "reason": "",
        "keep_up": _run(
            "coroutine",
            80,
            turn_latency_p95_ms=2650.0,
            vad_lag_warnings=0,
            turn_latency_p95_over_lone_ms=50.0,
        ),
        "lone": _run("coroutine", 1, turn_latency_p95_ms=2600.0),
    }
    base.update(kw)
    return base


def _overload(*runs: dict[str, Any], within_s: float = 5.0) -> dict[str, Any]:
    return {
        "benchmark": "overload",
        "date": "2026-11-27T06:30:00+00:00",
        "machine": MACHINE,
        "command": "PYTHONPATH=src .venv/bin/python bench/overload.py",
        "duration_s": 300.0,
        "config": {"offered": 130, "within_s": within_s, "offer_deadline_s": 1.0},
        "runs": list(runs),
    }


def test_the_overload_target_is_met_only_when_every_part_is() -> None:
    assert report.overload_misses(_burst(), {"within_s": 5.0}) == []
    misses = report.overload_misses(
        _burst(admitted=70, calls_failed=2, failed_jobs={"failed": 2}, offer_unanswered=3),
        {"within_s": 5.0},
    )
    assert misses == [
        "2 admitted calls failed {'failed': 2}",
        "only 70 admitted",
        "3 calls were neither admitted nor refused (offers unanswered)",
    ]
    assert report.overload_misses(_burst(), {"within_s": 8.0})[0].startswith("the burst was 130")
    slow = _burst(kept_up=False)
    slow["keep_up"].update(turn_latency_p95_over_lone_ms=240.0, vad_lag_warnings=4)
    (miss,) = report.overload_misses(slow, {"within_s": 5.0})
    assert miss == (
        "the admitted calls did not keep up (turn p95 240 ms above a lone call's; the worker "
        "warned 4x that its VAD is behind)"
    )


def test_the_overload_verdict_is_met_by_any_worker_shape_and_names_it() -> None:
    one = _burst(1, kept_up=False)
    two = _burst(2, admitted=110)
    (verdict,) = report.overload_verdicts(_overload(one, two))
    assert verdict.met is True
    assert verdict.detail.startswith("Met with --processes 2.")
    assert "one process: 130 offered in 5.0 s, 80 admitted" in verdict.detail
    assert "overloaded 41" in verdict.detail
    (missed,) = report.overload_verdicts(_overload(one))
    assert missed.met is False and missed.detail.startswith("No worker shape met it.")
    assert "missed: the admitted calls did not keep up" in missed.line()
    (absent,) = report.overload_verdicts(None)
    assert absent.met is None and "bench/overload.py" in absent.detail


def test_the_100_calls_verdict_takes_the_best_mode_per_box_and_says_which() -> None:
    result = _with_summary(largest_n_kept_up=50, first_n_missed=75)
    result["summary"]["coroutine-processes-2"] = {
        "largest_n_kept_up": 100,
        "first_n_missed": 125,
        "ns_measured": [1, 25, 50, 75, 100, 125],
    }
    assert report.best_per_box(result["summary"]) == ("coroutine-processes-2", 100)
    verdict = report.per_box_verdict(result["summary"])
    assert verdict.met is True
    assert verdict.detail.startswith("met by coroutine-processes-2: largest N kept up: 100")
    assert "coroutine: 50 (first missed 75)" in verdict.detail
    assert "no mode with several processes" not in verdict.detail
    one_loop = report.per_box_verdict(_with_summary()["summary"])
    assert one_loop.met is False and "no mode with several processes per box" in one_loop.detail
    assert report.best_per_box({}) == (None, None)
    assert report.per_box_verdict({}).met is None


def test_the_page_has_an_overload_section_and_its_verdict_at_a_glance(tmp_path: Path) -> None:
    (tmp_path / "density.json").write_text(json.dumps(DENSITY))
    (tmp_path / "overload.json").write_text(json.dumps(_overload(_burst(2))))
    page = report.render(report.load(tmp_path))
    glance = page.split("## Density")[0]
    assert "**MET**: offered 130 calls within 5 s" in glance
    assert "## Overload" in page
    assert "| 2 | 130 | 5.00 | 80 | 30 | 20 | 0 | overloaded 41 |" in page


def _loop_run(kept: int, cpu25: float) -> dict[str, Any]:
    runs = [
        _run("coroutine", n, cpu_per_call_pct=cpu25 if n == 25 else 1.5, kept_up=n <= kept)
        for n in (1, 25, 50, 75)
    ]
    summary = {"coroutine": {"largest_n_kept_up": kept, "cpu_per_call_pct_at_25": cpu25}}
    return {"machine": MACHINE, "date": "2026-12-05", "runs": runs, "summary": summary}


def test_uvloop_counts_as_a_gain_only_beyond_the_noise() -> None:
    base = _loop_run(50, 1.70)
    assert report.uvloop_verdict(base, _loop_run(75, 1.70)).met is True
    assert report.uvloop_verdict(base, _loop_run(50, 1.55)).met is True
    same = report.uvloop_verdict(base, _loop_run(50, 1.65))
    assert same.met is False and "default stays asyncio" in same.detail
    assert "1.70% -> 1.65%" in same.detail
    assert report.uvloop_verdict(base, _loop_run(25, 1.20)).met is False
    assert report.uvloop_verdict(base, {"summary": {}}).met is None
    edge = report.uvloop_verdict(base, _loop_run(75, 1.76))
    assert edge.met is False, "more calls kept up at more CPU per call is the edge moving"
    assert "not a faster loop" in edge.detail


def test_the_page_compares_the_loops_when_both_runs_exist(tmp_path: Path) -> None:
    (tmp_path / "density.json").write_text(json.dumps(_loop_run(50, 1.70)))
    page = report.render(report.load(tmp_path))
    assert "uvloop" not in page
    (tmp_path / "density-uvloop.json").write_text(json.dumps(_loop_run(75, 1.40)))
    page = report.render(report.load(tmp_path))
    assert "## Event loop: uvloop against asyncio" in page
    assert "**MET**: uvloop gains over asyncio" in page
    assert "| coroutine | 25 | 1.70 | 1.40 |" in page


def test_grids_of_different_code_give_way_to_a_pair_measured_back_to_back(
    tmp_path: Path,
) -> None:
    def on(commit: str, kept: int, cpu25: float) -> dict[str, Any]:
        run = _loop_run(kept, cpu25)
        run["machine"] = {**MACHINE, "openrtc": {"commit": commit}}
        return run

    (tmp_path / "density.json").write_text(json.dumps(on("aaa", 50, 1.70)))
    (tmp_path / "density-uvloop.json").write_text(json.dumps(on("bbb", 75, 1.40)))
    page = report.render(report.load(tmp_path))
    assert "NOT MEASURED" in page and "openrtc: aaa vs bbb" in page
    (tmp_path / "ab-loop-asyncio.json").write_text(json.dumps(on("ccc", 50, 1.50)))
    (tmp_path / "ab-loop-uvloop.json").write_text(json.dumps(on("ccc", 50, 1.48)))
    page = report.render(report.load(tmp_path))
    assert "ab-loop-uvloop.json against ab-loop-asyncio.json." in page
    assert "**MISSED**: uvloop gains over asyncio" in page
    assert "1.50% -> 1.48%" in page and "aaa vs bbb" not in page
    # the full grids win again once they ran the same code
    (tmp_path / "density-uvloop.json").write_text(json.dumps(on("aaa", 75, 1.40)))
    page = report.render(report.load(tmp_path))
    assert "density-uvloop.json against density.json." in page
    assert "**MET**: uvloop gains over asyncio" in page


def test_uvloop_must_beat_the_best_of_the_asyncio_repeats(tmp_path: Path) -> None:
    def on(kept: int, cpu25: float) -> str:
        run = _loop_run(kept, cpu25)
        run["machine"] = {**MACHINE, "openrtc": {"commit": "ccc"}}
        return json.dumps(run)

    (tmp_path / "ab-loop-asyncio.json").write_text(on(25, 1.48))
    (tmp_path / "ab-loop-uvloop.json").write_text(on(75, 1.42))
    alone = report.render(report.load(tmp_path))
    assert "**MET**: uvloop gains over asyncio" in alone, "one unlucky asyncio run"
    (tmp_path / "ab-loop-asyncio-repeat.json").write_text(on(75, 1.46))
    page = report.render(report.load(tmp_path))
    assert "**MISSED**: uvloop gains over asyncio" in page
    assert "kept up 75 -> 75, CPU/call at N=25 1.46% -> 1.42%" in page
    assert "against ab-loop-asyncio.json and ab-loop-asyncio-repeat.json (the table" in page
    # a repeat of other code is not a repeat
    (tmp_path / "ab-loop-asyncio-repeat.json").write_text(
        json.dumps({**json.loads(on(75, 1.46)), "machine": {**MACHINE, "openrtc": {"commit": "d"}}})
    )
    assert "NOT MEASURED" in report.render(report.load(tmp_path))


def test_the_answer_target_is_judged_on_the_workers_own_time_with_the_round_trip_beside() -> None:
    timed = copy.deepcopy(ADMISSION)
    timed["summary"].update(
        answer_p99_ms=6.1, worker_answers=40, worker_answer_p50_ms=1.0, worker_answer_p99_ms=4.0
    )
    timed["rows"][0].update(cap=25, burst=50, worker_answer_p50_ms=1.0, worker_answer_p99_ms=4.0)
    _, latency = report.admission_verdicts(timed)
    assert latency.met is True and "worker's own answer time" in latency.target
    assert "p99 <= 4.00 ms over all 40 answers" in latency.detail
    assert "cap 25 burst 50: p99 <= 4.00 ms" in latency.detail
    assert "p99 over all" in latency.detail and "6.10 ms" in latency.detail
    timed["summary"]["worker_answer_p99_ms"] = 5.0  # a bucket bound of 5: not under 5
    assert report.admission_verdicts(timed)[1].met is False
    timed["summary"]["worker_answer_p99_ms"] = float("inf")
    assert report.admission_verdicts(timed)[1].met is False
    section = report.admission_section(timed)
    assert "<= 4" in section and "worker's own answer p99 ms" in section


def test_histogram_percentiles_are_bucket_bounds() -> None:
    import admission  # bench/admission.py

    bounds = [*map(str, admission.ANSWER_BUCKETS_MS), "+Inf"]

    def snap(per_bucket: dict[str, int]) -> dict[str, Any]:
        """A /snapshot whose cumulative answer histogram holds these counts."""
        running, le_ms = 0, {}
        for bound in bounds:
            running += per_bucket.get(bound, 0)
            le_ms[bound] = running
        return {"offer_answers": {"le_ms": le_ms}}

    counts = admission.answer_counts(snap({"0.5": 2, "1.0": 88, "2.0": 9, "5.0": 1}))
    assert sum(counts) == 100
    assert admission.answer_percentile(counts, 50) == 1.0
    assert admission.answer_percentile(counts, 99) == 2.0
    assert admission.answer_percentile(counts, 100) == 5.0
    past_all = admission.answer_counts(snap({"+Inf": 3}))
    assert admission.answer_percentile(past_all, 99) == float("inf")
    assert admission.answer_percentile(admission.answer_counts(None), 99) is None
    assert admission.summed([[1, 0, 2], [0, 3, 1]]) == [1, 3, 3]


def test_uvloop_is_no_gain_when_another_mode_keeps_up_with_fewer_calls() -> None:
    def two_modes(kept: tuple[int, int], cpu25: tuple[float, float]) -> dict[str, Any]:
        run = _loop_run(kept[0], cpu25[0])
        run["summary"]["coroutine-processes-2"] = {
            "largest_n_kept_up": kept[1],
            "cpu_per_call_pct_at_25": cpu25[1],
        }
        return run

    base = two_modes((75, 100), (1.64, 1.88))
    # 1.88 - 1.78 is 0.0999... in floating point: the results hold two decimals
    exactly = report.uvloop_verdict(base, two_modes((75, 100), (1.64, 1.78)))
    assert exactly.met is True
    mixed = report.uvloop_verdict(base, two_modes((50, 100), (1.54, 1.78)))
    assert mixed.met is False
    assert "fewer calls in coroutine, so that is no gain" in mixed.detail
    assert "default stays asyncio" in mixed.detail


def test_the_cpu_verdict_says_what_the_turn_model_and_each_thread_cost_per_call() -> None:
    parts = {"loop": 20.0, "vad": 7.5, "turn": 4.5, "other": 0.1, "short_lived": 8.5,
             "outside": 0.15}  # fmt: skip
    result = {
        "runs": [
            _run(
                "coroutine",
                25,
                window_s=20.0,
                turn_predictions={"runs": 56},
                predictions_per_turn=1.0,
                cpu_parts_pct=parts,
            )
        ],
        "summary": {"coroutine": {"cpu_per_call_pct_at_25": 1.63}},
    }
    eot = {"runs": {"default": {"1.2 s": {"cpu_ms": 47.1}}}}
    verdict = next(v for v in report.shared_vad_verdicts(result, eot) if "N=25" in v.target)
    assert verdict.met is False
    # 56 runs x 47.1 ms over 20 s, over 25 calls
    assert "ran 56 times in that window (1.00 per turn answered)" in verdict.detail
    assert "0.53% of a core per call" in verdict.detail
    assert "event loop 0.80%, VAD model thread 0.30%, end-of-turn model 0.52%" in verdict.detail
    assert "(0.18% on its thread, 0.34% on the short-lived" in verdict.detail
    assert "the rest 0.01%" in verdict.detail
    bare = next(
        v
        for v in report.shared_vad_verdicts({**result, "runs": [_run("coroutine", 25)]})
        if "N=25" in v.target
    )
    assert "end-of-turn" not in bare.detail and "By thread" not in bare.detail


def test_uvloop_is_not_compared_with_a_run_measured_differently() -> None:
    """A gain between runs with different baselines is the harness changing, not the loop."""
    base = {**_loop_run(75, 1.70), "config": {"lone_turns": 40, "window_s": 20.0}}
    older = {**_loop_run(100, 1.60), "config": {"window_s": 20.0}}
    verdict = report.uvloop_verdict(base, older)
    assert verdict.met is None
    assert "lone_turns: 40 vs None" in verdict.detail
    same = {**_loop_run(100, 1.60), "config": {"lone_turns": 40, "window_s": 20.0}}
    assert report.uvloop_verdict(base, same).met is True


def test_uvloop_is_not_compared_with_a_run_of_other_code() -> None:
    """Two grids of different commits differ in more than the loop."""
    config = {"lone_turns": 40, "window_s": 20.0}
    base = {**_loop_run(75, 1.70), "config": config, "machine": {"openrtc": {"commit": "a1"}}}
    other = {**_loop_run(100, 1.60), "config": config, "machine": {"openrtc": {"commit": "b2"}}}
    verdict = report.uvloop_verdict(base, other)
    assert verdict.met is None and "openrtc: a1 vs b2" in verdict.detail
    dirty = {"openrtc": {"commit": "a1", "src_files_changed_since_commit": ["src/x.py"]}}
    assert report.uvloop_verdict(base, {**other, "machine": dirty}).met is None
    same = {**other, "machine": {"openrtc": {"commit": "a1"}}}
    assert report.uvloop_verdict(base, same).met is True
