"""Reading a worker that runs as several processes: one parent's /snapshot, every child's
numbers summed, and density's mode for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import density
import pytest
from benchkit import accepting_ids, call_stats, rejected_total, snapshot_pids, worker_snapshots

EDGES = [1.0, 5.0, 50.0]


def _child(pid: int, **stats: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "loop_lag_edges_ms": EDGES,
        "loop_lag_hist": [0, 0, 0, 0],
        "vad_frames_pushed": 0,
        "vad_frames_late": 0,
        "vad_kinds": {},
    }
    base.update(stats)
    return {
        "pid": pid,
        "worker_id": f"AW_{pid}",
        "state": "accepting",
        "rejected_total": {"overloaded": pid % 10},
        "call_stats": base,
    }


def _parent(*children: dict[str, Any] | None, processes: int | None = None) -> dict[str, Any]:
    return {
        "pid": 1,
        "processes": processes if processes is not None else len(children),
        "children": [
            {"process": i, "pid": (c or {}).get("pid"), "snapshot": c}
            for i, c in enumerate(children, 1)
        ],
    }


def test_every_childs_call_stats_add_up() -> None:
    snap = _parent(
        _child(11, loop_lag_hist=[5, 1, 0, 0], vad_frames_pushed=100, vad_kinds={"A": 2}),
        _child(12, loop_lag_hist=[3, 0, 2, 1], vad_frames_pushed=50, vad_kinds={"A": 1, "B": 4}),
    )
    total = call_stats(snap)
    assert total["loop_lag_hist"] == [8, 1, 2, 1]
    assert total["loop_lag_edges_ms"] == EDGES
    assert total["vad_frames_pushed"] == 150
    assert total["vad_kinds"] == {"A": 3, "B": 4}
    assert rejected_total(snap) == {"overloaded": 3}
    assert snapshot_pids(snap) == {11, 12}


def test_a_single_worker_is_read_as_it_is() -> None:
    one = _child(7, vad_frames_pushed=9)
    assert worker_snapshots(one) == [one]
    assert call_stats(one)["vad_frames_pushed"] == 9
    assert accepting_ids(one) == ["AW_7"]
    assert call_stats(None) == {} and worker_snapshots(None) == []


def test_a_restarted_child_counts_from_zero_not_against_its_predecessor() -> None:
    """Readings are restricted to the processes of the last one: a child that replaced
    another (new pid) contributes nothing to the earlier reading, so its whole count is
    its own rather than its total minus its predecessor's."""
    before = _parent(_child(11, vad_frames_pushed=100), _child(12, vad_frames_pushed=900))
    after = _parent(_child(11, vad_frames_pushed=300), _child(13, vad_frames_pushed=50))
    pids = snapshot_pids(after)
    grown = (
        call_stats(after, pids)["vad_frames_pushed"] - call_stats(before, pids)["vad_frames_pushed"]
    )
    assert grown == 200 + 50


def test_a_parent_accepts_only_once_every_child_does() -> None:
    assert accepting_ids(_parent(_child(11), _child(12))) == ["AW_11", "AW_12"]
    starting = _child(12)
    starting["state"] = "starting"
    assert accepting_ids(_parent(_child(11), starting)) == []
    assert accepting_ids(_parent(_child(11), None)) == []  # a child that did not answer
    assert accepting_ids(_parent(_child(11), processes=2)) == []


def test_density_runs_any_number_of_processes_with_its_own_grid() -> None:
    assert density.mode_args("coroutine-processes-2")[-2:] == ["--processes", "2"]
    assert density.mode_args("coroutine-processes-4")[-2:] == ["--processes", "4"]
    with pytest.raises(KeyError):
        density.mode_args("coroutine-processes-0")
    assert density.default_ns("coroutine-processes-2")[-2:] == [100, 125]
    assert density.default_ns("coroutine") == density.DEFAULT_NS
    cfg = density.parse(["--modes", "coroutine,coroutine-processes-2"])
    assert cfg.ns["coroutine"] == [1, 10, 25, 50, 75, 100]
    assert cfg.ns["coroutine-processes-2"] == [1, 25, 50, 75, 100, 125]
    assert density.parse(["--modes", "coroutine-processes-2", "--n", "5"]).ns == {
        "coroutine-processes-2": [1, 5]
    }


def test_density_refuses_an_unknown_mode_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        density.parse(["--modes", "coroutine,fibers"])
    assert exit_.value.code == 2
    assert "--modes takes some of" in capsys.readouterr().err


def test_a_failure_is_quoted_from_a_json_log_line(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        '{"message": "call AJ_abc failed: CallFailed: timed out after 30 s", "pid": 12}\n'
    )
    assert density._logged_failure(log, "AJ_abc") == "CallFailed: timed out after 30 s"
