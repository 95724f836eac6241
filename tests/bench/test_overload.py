"""The overload benchmark's burst plan, and how it sorts the offered calls."""

from __future__ import annotations

import itertools
from pathlib import Path

import overload
import pytest
from workload import Workload

from openrtc.devserver.records import JobRecord, JobState, Offer


def _cfg(**kw: object) -> overload.OverloadConfig:
    base: dict[str, object] = dict(
        offered=130,
        within_s=5.0,
        offer_deadline_s=1.0,
        processes=[1],
        window_s=20.0,
        settle_s=5.0,
        workdir=Path("/tmp"),
        out="x",
        worker_args=[],
        workload=Workload(seed=1),
    )
    base.update(kw)
    return overload.OverloadConfig(**base)  # type: ignore[arg-type]


def test_the_burst_is_the_workloads_calls_within_the_span_held_through_the_window() -> None:
    cfg = _cfg()
    calls = overload.plan(cfg)
    planned = list(itertools.islice(cfg.workload.calls(), 130))
    assert len(calls) == 130
    assert calls[0][0] == 0.0
    assert calls[-1][0] == pytest.approx(5.0, abs=0.01)
    assert all(a <= b for (a, *_), (b, *_) in itertools.pairwise(calls))
    for (_, agent, script), call in zip(calls, planned, strict=True):
        assert agent == call.agent
        assert script["turns"] == call.script["turns"]  # density's scripts, unchanged
        assert script["pause_s"] == call.script["pause_s"]
        # held (silent) past the burst, the settle and the window
        assert script["hold_s"] >= call.script["hold_s"] + 5.0 + 5.0 + 20.0


def _job(
    n: int, *offers: Offer, state: JobState = JobState.UNSERVED, worker: str | None = None
) -> JobRecord:
    job = JobRecord(
        id=f"AJ_{n}",
        dispatch_id="AD",
        room="r",
        room_sid="RM",
        agent_name="",
        metadata="",
        room_metadata="",
        created_at=0.0,
        state=state,
        worker_id=worker,
    )
    job.offers.extend(offers)
    if worker is not None:
        job.assigned_at = 1.0
    return job


def test_each_offered_call_is_admitted_refused_or_never_offered() -> None:
    yes = Offer("AW_1", available=True, answered_in_ms=2.0)
    no = Offer("AW_1", available=False, answered_in_ms=3.0)
    silent = Offer("AW_1", available=False, answered_in_ms=None)
    jobs = [
        _job(1, yes, state=JobState.RUNNING, worker="AW_1"),
        _job(2, no, yes, state=JobState.SUCCESS, worker="AW_1"),
        _job(3, yes, state=JobState.FAILED, worker="AW_1"),
        _job(4, no),
        _job(5, no, no),
        _job(6),  # the worker reported itself full: never offered
        _job(7, silent),
    ]
    burst = overload.Burst(processes=1)
    overload.classify(burst, jobs)
    assert (burst.offered, burst.admitted, burst.not_admitted) == (7, 3, 4)
    assert burst.admitted_after_refusal == 1
    assert (burst.refused_by_answer, burst.never_offered_full, burst.offer_unanswered) == (2, 1, 1)
    overload.outcomes(burst, jobs)
    assert (burst.calls_completed, burst.calls_failed, burst.calls_live_at_end) == (1, 1, 1)
    assert burst.failed_jobs == {"failed": 1}


def test_bad_flags_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--processes", "two"], ["--processes", "0"], ["--offer-deadline", "0"]):
        with pytest.raises(SystemExit) as exit_:
            overload.parse(argv)
        assert exit_.value.code == 2
        assert "--" in capsys.readouterr().err
    cfg = overload.parse(["--quick", "--processes", "2"])
    assert (cfg.offered, cfg.processes, cfg.out) == (12, [2], "overload-quick")
    assert cfg.mode(2) == "coroutine-processes-2" and cfg.mode(1) == "coroutine"
