"""The deploy benchmark's arithmetic: windows, outcomes, what an old worker did after SIGTERM."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from benchkit import Worker

from deploy import (
    DeployRecord,
    SteadyTraffic,
    accounted,
    deploy_ok,
    deploy_rows,
    last_call_end_to_exit_ms,
    live_at,
    offers_after,
    outcomes,
    summarize,
    window_of,
)
from openrtc.devserver import DispatchServer
from openrtc.devserver.records import DevEvent, JobRecord, JobState
from tests.harness import wait_until

T0 = 1_000.0


def job(
    created: float,
    state: JobState = JobState.SUCCESS,
    worker: str | None = "W_old",
    assigned: float | None = None,
    ended: float | None = None,
) -> JobRecord:
    return JobRecord(
        id=f"AJ_{created}",
        dispatch_id="AD_x",
        room="room",
        room_sid="RM_x",
        agent_name="",
        metadata="",
        room_metadata="",
        created_at=T0 + created,
        state=state,
        worker_id=worker,
        assigned_at=None if assigned is None else T0 + assigned,
        ended_at=None if ended is None else T0 + ended,
    )


def event(seq: int, at: float, kind: str, **fields: Any) -> DevEvent:
    return DevEvent(seq=seq, ts=T0 + at, kind=kind, fields=fields)


def worker(name: str, worker_id: str, sigterm: float, exited: float, code: int) -> Worker:
    w = Worker(args=[], env={}, log_path=Path(f"{name}.log"), name=name)
    w.worker_id = worker_id
    w.sigterm_at = T0 + sigterm
    w.exited_at = T0 + exited
    w.exit_code = code
    return w


def test_outcomes_count_each_final_state_and_open_calls_as_unfinished() -> None:
    jobs = [
        job(0),
        job(1),
        job(2, JobState.FAILED),
        job(3, JobState.CANCELLED),
        job(4, JobState.DROPPED),
        job(5, JobState.UNSERVED),
        job(6, JobState.RUNNING),
        job(7, JobState.PENDING),
    ]
    counts = outcomes(jobs)
    assert counts == {
        "calls_placed": 8,
        "calls_completed": 2,
        "calls_failed": 1,
        "calls_cancelled": 1,
        "calls_dropped": 1,
        "calls_unserved": 1,
        "calls_unfinished": 2,
    }
    assert accounted(counts, placed=8) is False
    assert accounted(outcomes(jobs[:6]), placed=6) is True
    assert accounted(outcomes(jobs[:6]), placed=7) is False  # the generator placed one more


def test_windows_run_from_one_deploy_start_to_the_next() -> None:
    starts = [T0 + 10, T0 + 30]
    assert window_of(T0 + 5, starts) == 0
    assert window_of(T0 + 10, starts) == 1
    assert window_of(T0 + 29.9, starts) == 1
    assert window_of(T0 + 30, starts) == 2
    assert window_of(T0 + 500, starts) == 2
    assert window_of(T0, []) == 0


def test_live_at_counts_calls_assigned_and_not_yet_ended() -> None:
    jobs = [
        job(0, assigned=1, ended=9),  # live at 5
        job(1, assigned=2, ended=None, state=JobState.RUNNING),  # live at 5
        job(2, assigned=1, ended=4),  # ended before
        job(3, assigned=6, ended=8),  # assigned after
        job(4, worker="W_other", assigned=1, ended=9),  # another worker
        job(5, worker=None, state=JobState.UNSERVED),
    ]
    assert live_at(jobs, "W_old", T0 + 5) == 2
    assert live_at(jobs, "W_old", None) == 0


def test_offers_after_sigterm_pairs_each_offer_with_its_answer() -> None:
    events = [
        event(1, 1, "job_offered", job_id="A", worker_id="W"),
        event(2, 6, "job_offer_answered", job_id="A", worker_id="W", available=True),
        event(3, 6, "job_offered", job_id="B", worker_id="W"),
        event(4, 6.1, "job_offer_answered", job_id="B", worker_id="W", available=False),
        event(5, 7, "job_offered", job_id="C", worker_id="W"),
        event(6, 7.1, "job_offer_answered", job_id="C", worker_id="W", available=True),
        event(7, 7, "job_offered", job_id="D", worker_id="W_other"),
        event(8, 7.1, "job_offer_answered", job_id="D", worker_id="W_other", available=True),
    ]
    # A was offered before SIGTERM at 5: its late answer is not an offer after SIGTERM
    assert offers_after(events, "W", T0 + 5) == (2, 1)
    assert offers_after(events, "W", None) == (0, 0)


def test_last_call_end_to_exit_uses_the_workers_latest_call() -> None:
    jobs = [job(0, ended=4), job(1, ended=6), job(2, worker="W_other", ended=9), job(3)]
    assert last_call_end_to_exit_ms(jobs, "W_old", T0 + 6.25) == 250.0
    assert last_call_end_to_exit_ms(jobs, "W_old", None) is None
    assert last_call_end_to_exit_ms(jobs, "W_none", T0 + 6) is None


def _run_of_two_deploys() -> tuple[list[DeployRecord], list[JobRecord], list[DevEvent]]:
    a = worker("v1.0.0-1", "W_a", sigterm=12, exited=15.1, code=0)
    b = worker("v2.0.0-1", "W_b", sigterm=32, exited=40, code=3)
    records = [
        DeployRecord(1, "v1.0.0", "v2.0.0", T0 + 10, T0 + 15.1, old=[a]),
        DeployRecord(2, "v2.0.0", "v3.0.0", T0 + 30, T0 + 40, old=[b]),
    ]
    jobs = [
        job(1, worker="W_a", assigned=1.1, ended=4),  # before the first deploy
        job(11, worker="W_a", assigned=11.1, ended=15),  # deploy 1, live at a's SIGTERM
        job(13, worker="W_b", assigned=13.1, ended=20),
        job(31, worker="W_b", assigned=31.1, ended=38, state=JobState.CANCELLED),  # deploy 2
        job(33, worker="W_b", assigned=33.1, ended=36),  # taken after b's SIGTERM
        job(34, worker=None, state=JobState.DROPPED),
    ]
    events = [
        event(1, 12.004, "worker_status", worker_id="W_a", status="WS_FULL"),
        event(2, 32.020, "worker_status", worker_id="W_b", status="WS_FULL"),
        event(3, 33, "job_offered", job_id="AJ_33", worker_id="W_b"),
        event(4, 33.1, "job_offer_answered", job_id="AJ_33", worker_id="W_b", available=True),
    ]
    return records, jobs, events


def test_deploy_rows_measure_each_old_worker_and_each_window() -> None:
    records, jobs, events = _run_of_two_deploys()
    rows, before = deploy_rows(records, jobs, events)
    assert [j.created_at for j in before] == [T0 + 1]
    first, second = rows
    assert (first["calls_placed"], first["calls_completed"]) == (2, 2)
    assert first["sigterm_to_full_ms"] == {"v1.0.0-1": pytest.approx(4.0, abs=0.2)}
    assert first["last_call_end_to_exit_ms"] == {"v1.0.0-1": pytest.approx(100.0, abs=0.2)}
    assert first["calls_live_at_sigterm"] == {"v1.0.0-1": 1}
    assert first["offers_after_sigterm"] == {"v1.0.0-1": 0}
    assert first["exit_codes"] == {"v1.0.0-1": 0}
    assert first["duration_s"] == pytest.approx(5.1)
    assert first["ok"] is True
    assert (second["calls_placed"], second["calls_cancelled"], second["calls_dropped"]) == (3, 1, 1)
    assert second["calls_live_at_sigterm"] == {"v2.0.0-1": 1}
    assert second["offers_after_sigterm"] == {"v2.0.0-1": 1}
    assert second["calls_taken_after_sigterm"] == {"v2.0.0-1": 1}
    assert second["ok"] is False


def test_a_deploy_is_not_ok_for_any_one_fault() -> None:
    records, jobs, events = _run_of_two_deploys()
    good = deploy_rows(records, jobs, events)[0][0]
    assert deploy_ok(good)
    for key, value in (
        ("calls_completed", 1),
        ("calls_taken_after_sigterm", {"v1.0.0-1": 1}),
        ("exit_codes", {"v1.0.0-1": None}),
        ("problems", ["v1.0.0-1 had not exited 70s after SIGTERM; killed"]),
    ):
        assert not deploy_ok({**good, key: value}), key


def test_summary_pools_old_workers_and_totals_the_whole_run() -> None:
    records, jobs, events = _run_of_two_deploys()
    rows, _ = deploy_rows(records, jobs, events)
    s = summarize(rows, outcomes(jobs), placed=len(jobs))
    assert (s["deploys"], s["deploys_ok"], s["old_workers"]) == (2, 1, 2)
    assert s["sigterm_to_full_max_ms"] == pytest.approx(20.0, abs=0.2)
    assert s["sigterm_to_full_not_measured"] == 0
    assert s["last_call_end_to_exit_max_ms"] == pytest.approx(2000.0, abs=0.2)
    assert (s["calls_placed"], s["calls_completed"], s["calls_dropped"]) == (6, 4, 1)
    assert s["calls_accounted"] is True
    assert s["old_workers_with_live_calls_at_sigterm"] == 2
    assert (s["offers_to_old_after_sigterm"], s["calls_taken_by_old_after_sigterm"]) == (1, 1)
    assert s["nonzero_exits"] == 1


async def test_steady_traffic_places_calls_until_stopped() -> None:
    async with DispatchServer(dispatch_deadline=5.0, offer_timeout=1.0) as server:
        traffic = SteadyTraffic(server, rate=50.0, hold_s=(1.0, 2.0), mode="text", seed=1)
        task = asyncio.create_task(traffic.run())
        await wait_until(lambda: traffic.placed >= 5)
        traffic.stop()
        await asyncio.wait_for(task, 5.0)
        placed = traffic.placed
        assert [j.id for j in traffic.jobs] == [j.id for j in server.jobs()]
        holds = [json.loads(j.metadata)["simulated_call"]["hold_s"] for j in traffic.jobs]
    assert len(holds) == placed and all(1.0 <= h <= 2.0 for h in holds)
    # no worker ever registered: the server closing leaves each call unserved, none lost
    counts = outcomes(traffic.jobs)
    assert counts["calls_unserved"] == placed and accounted(counts, placed)
