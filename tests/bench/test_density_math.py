"""The density benchmark's window arithmetic and its rules for when a mode stops."""

from __future__ import annotations

import time
from pathlib import Path

import density
import pytest

EDGES = [1.0, 5.0, 50.0, 1000.0]


def _stats(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "loop_lag_edges_ms": EDGES,
        "vad_latency_edges_ms": EDGES,
        "loop_lag_hist": [0, 0, 0, 0, 0],
        "vad_latency_hist": [0, 0, 0, 0, 0],
        "vad_frames_pushed": 0,
        "vad_frames_done": 0,
        "vad_frames_late": 0,
        "vad_frames_pending": 0,
        "vad_frames_pending_late": 0,
        "mic_frames_sent": 0,
        "mic_frames_late": 0,
        "mic_frames_skipped": 0,
        "vad_streams_open": 0,
    }
    base.update(kw)
    return base


def test_window_numbers_use_only_what_happened_in_the_window() -> None:
    before = _stats(
        loop_lag_hist=[500, 0, 0, 0, 0],
        vad_frames_pushed=1000,
        vad_frames_done=990,
        vad_frames_pending=10,
        vad_latency_hist=[0, 990, 0, 0, 0],
        mic_frames_sent=500,
    )
    after = _stats(
        loop_lag_hist=[500, 90, 9, 1, 0],
        vad_frames_pushed=3000,
        vad_frames_done=2980,
        vad_frames_pending=20,
        vad_frames_late=30,
        vad_frames_pending_late=5,
        vad_latency_hist=[0, 2950, 30, 0, 0],
        mic_frames_sent=1490,
        mic_frames_late=5,
        mic_frames_skipped=10,
        vad_streams_open=40,
    )
    run = density.Run(mode="coroutine", n=20)
    density.window_numbers(run, before, after, 20, 20.0)
    assert run.loop_lag_p50_ms == 5.0  # the 500 samples before the window do not count
    assert run.loop_lag_p99_ms == 50.0
    assert run.vad_frames_pushed == 2000
    assert run.vad_frames_late == 35
    assert run.vad_missed_pct == 1.75
    assert run.vad_latency_p99_ms == 50.0
    assert run.mic_frames_due == 1000
    assert run.mic_frames_late == 15
    assert run.mic_missed_pct == 1.5
    assert run.vad_streams_open == 40


def test_missed_share_never_exceeds_everything() -> None:
    before = _stats(vad_frames_pushed=100, vad_frames_pending=50, vad_frames_pending_late=0)
    after = _stats(
        vad_frames_pushed=200,
        vad_frames_done=60,
        vad_frames_late=60,
        vad_frames_pending=90,
        vad_frames_pending_late=90,
    )
    run = density.Run(mode="thread", n=5)
    density.window_numbers(run, before, after, 5, 10.0)
    assert run.vad_missed_pct == 100.0


def test_nothing_measured_is_none_not_zero() -> None:
    run = density.Run(mode="process", n=5)
    density.window_numbers(run, {}, {}, 5, 10.0)
    assert run.loop_lag_p99_ms is None
    assert run.vad_missed_pct is None and run.mic_missed_pct is None


def _cfg(**kw: object) -> density.Config:
    base = dict(
        ns=[10, 25],
        modes=["coroutine"],
        window_s=15.0,
        settle_s=4.0,
        pace_s=0.2,
        ramp_timeout_s=120.0,
        time_budget_s=600.0,
        mem_budget_mb=4000.0,
        worker_args=[],
        workdir=Path("/tmp"),
        out="x",
    )
    base.update(kw)
    return density.Config(**base)  # type: ignore[arg-type]


def test_a_mode_stops_after_it_failed_or_went_over() -> None:
    runs = [density.Run(mode="thread", n=10, status="over", reason="loop lag p99 over 1000 ms")]
    reason = density._skip_reason(_cfg(), runs, "thread", 25, time.monotonic())
    assert reason == "thread stopped at N=10: loop lag p99 over 1000 ms"
    assert density._skip_reason(_cfg(), runs, "coroutine", 25, time.monotonic()) is None


def test_a_mode_stops_when_its_projected_memory_is_over_budget() -> None:
    runs = [density.Run(mode="process", n=10, idle_pss_mb=800.0, pss_per_call_mb=70.0, seconds=30)]
    assert density._skip_reason(_cfg(), runs, "process", 25, time.monotonic()) is None
    reason = density._skip_reason(_cfg(), runs, "process", 50, time.monotonic())
    assert reason is not None and "projected PSS 4300 MB" in reason


def test_the_time_budget_skips_what_would_not_finish() -> None:
    runs = [density.Run(mode="coroutine", n=10, seconds=100.0)]
    started = time.monotonic() - 400
    reason = density._skip_reason(_cfg(), runs, "coroutine", 25, started)
    assert reason is not None and reason.startswith("time budget")


def test_a_failed_call_is_explained_from_the_worker_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "06:40:00 INFO    openrtc.call: call AJ_other uses simulated media\n"
        "06:40:00 ERROR   openrtc.call: call AJ_abc failed: CallFailed: timed out after 30 s\n"
    )
    assert density._logged_failure(log, "AJ_abc") == "CallFailed: timed out after 30 s"
    assert density._logged_failure(log, "AJ_none") == ""
    assert density._logged_failure(tmp_path / "missing.log", "AJ_abc") == ""


def _held(n: int, **kw: object) -> density.Run:
    base: dict[str, object] = {
        "mode": "coroutine",
        "n": n,
        "loop_lag_p99_ms": 20.0,
        "vad_missed_pct": 0.0,
        "mic_missed_pct": 0.0,
        "cpu_per_call_pct": 1.5,
        "turn_latency_p95_ms": 900.0,
        "calls_failed": 0,
        "vad_lag_warnings": 0,
    }
    base.update(kw)
    return density.Run(**base)  # type: ignore[arg-type]


LONE = _held(1, turn_latency_p95_ms=900.0)


def test_keeping_up_is_what_a_caller_hears_plus_a_calm_loop() -> None:
    assert density.keeps_up(_held(25), LONE)
    assert density.keeps_up(_held(25, turn_latency_p95_ms=950.0), LONE)
    assert not density.keeps_up(_held(25, turn_latency_p95_ms=955.0), LONE)
    assert not density.keeps_up(_held(25, calls_failed=1), LONE)
    assert not density.keeps_up(_held(25, vad_lag_warnings=1), LONE)
    assert density.keeps_up(_held(25, loop_lag_p99_ms=40.0), LONE)
    assert not density.keeps_up(_held(25, loop_lag_p99_ms=50.0), LONE)
    assert not density.keeps_up(_held(25, status="over"), LONE)
    # nothing to judge against, or nothing measured: not kept up
    assert not density.keeps_up(_held(25), None)
    assert not density.keeps_up(_held(25), _held(1, turn_latency_p95_ms=None))
    assert not density.keeps_up(_held(25, turn_latency_p95_ms=None), LONE)
    assert not density.keeps_up(_held(25, calls_failed=None), LONE)
    assert not density.keeps_up(_held(25, vad_lag_warnings=None), LONE)


def test_a_vad_lag_warning_fails_a_run_whatever_share_of_frames_was_late() -> None:
    """The worker warned while under 1% of frames were late: that run did not keep up."""
    run = _held(75, vad_missed_pct=0.004, vad_lag_warnings=3)
    assert not density.keeps_up(run, LONE)


def test_a_mode_that_no_longer_keeps_up_is_not_grown() -> None:
    runs = [_held(50, kept_up=False, reason="cannot keep up in real time")]
    reason = density._skip_reason(_cfg(), runs, "coroutine", 75, time.monotonic())
    assert reason == "coroutine no longer kept up at N=50: cannot keep up in real time"


def test_summary_gives_the_largest_n_kept_up_per_mode() -> None:
    runs = [
        _held(1, turn_latency_p95_ms=800.0, cpu_per_call_pct=6.0),
        _held(25, cpu_per_call_pct=1.6, turn_latency_p95_ms=810.0),
        _held(75, cpu_per_call_pct=1.4, turn_latency_p95_ms=850.0),
        _held(100, turn_latency_p95_ms=1100.0),
        _held(1, mode="thread", turn_latency_p95_ms=800.0),
        _held(25, mode="thread", loop_lag_p99_ms=150.0, cpu_per_call_pct=5.0),
        density.Run(mode="thread", n=50, status="skipped"),
    ]
    kept = density.summary(runs)
    assert kept["coroutine"] == {
        "largest_n_kept_up": 75,
        "cpu_per_call_pct_at_largest": 1.4,
        "cpu_per_call_pct_at_25": 1.6,
        "first_n_missed": 100,
        "lone_call_turn_latency_p95_ms": 800.0,
        "ns_measured": [1, 25, 75, 100],
    }
    assert kept["thread"]["largest_n_kept_up"] == 1
    assert kept["thread"]["first_n_missed"] == 25
    assert kept["thread"]["ns_measured"] == [1, 25]


def test_the_time_budget_is_not_estimated_from_a_lone_call() -> None:
    runs = [density.Run(mode="coroutine", n=1, seconds=60.0)]
    assert density._skip_reason(_cfg(), runs, "coroutine", 25, time.monotonic()) is None


def test_vad_lag_warnings_are_counted_from_the_worker_log() -> None:
    lines = [
        "06:40:00 INFO    openrtc.call: call AJ_a uses simulated media",
        "06:40:01 WARNING openrtc.vad: VAD is 203 ms behind real time on 150 streams: this "
        "worker has more calls than its CPU can serve; lower max_concurrent_sessions",
        "06:40:11 WARNING openrtc.vad: VAD is 543 ms behind real time on 150 streams: ...",
        "06:40:12 WARNING livekit.plugins.silero: VAD inference is slower than realtime",
    ]
    assert density.vad_lag_warnings(lines) == (3, 543.0)
    assert density.vad_lag_warnings(lines[:1]) == (0, None)


def test_vad_frames_late_before_the_window_still_count() -> None:
    """Frames late while calls arrived (before the steady window) are the run's too: the
    worker warned about them, so the late count must not read 0 over the window alone."""
    start = _stats()
    before = _stats(vad_frames_pushed=5000, vad_frames_done=5000, vad_frames_late=40)
    after = _stats(vad_frames_pushed=15000, vad_frames_done=15000, vad_frames_late=40)
    windowed = density.Run(mode="coroutine", n=75)
    density.window_numbers(windowed, before, after, 75, 20.0)
    assert windowed.vad_frames_late == 0  # what the window alone says
    run = density.Run(mode="coroutine", n=75)
    density.window_numbers(run, before, after, 75, 20.0, run_start=start)
    assert run.vad_frames_pushed == 15000 and run.vad_frames_late == 40
    assert run.vad_missed_pct == pytest.approx(0.267, abs=0.001)


def test_turn_latency_percentiles_come_from_the_window_and_compare_to_a_lone_call() -> None:
    edges = [100.0, 200.0, 300.0, 400.0]
    before = _stats(turn_latency_edges_ms=edges, turn_latency_hist=[0, 50, 0, 0, 0])
    after = _stats(turn_latency_edges_ms=edges, turn_latency_hist=[0, 50, 80, 15, 5])
    run = density.Run(mode="coroutine", n=25)
    density.window_numbers(run, before, after, 25, 20.0)
    assert run.turns_measured == 100
    assert (run.turn_latency_p50_ms, run.turn_latency_p95_ms) == (300.0, 400.0)
    density.over_lone(run, _held(1, turn_latency_p50_ms=200.0, turn_latency_p95_ms=300.0))
    assert run.turn_latency_p50_over_lone_ms == 100.0
    assert run.turn_latency_p95_over_lone_ms == 100.0
    quiet = density.Run(mode="coroutine", n=25)
    density.window_numbers(quiet, _stats(), _stats(), 25, 20.0)
    assert quiet.turns_measured is None and quiet.turn_latency_p95_ms is None


def test_cpu_parts_are_the_windows_share_of_each_threads_clock() -> None:
    run = density.Run(mode="coroutine", n=25)
    run.cpu_pct = 41.0
    before = {"thread_cpu_s": {"loop": 100.0, "vad": 10.0, "turn": 5.0, "short_lived": 3.0}}
    after = {"thread_cpu_s": {"loop": 104.0, "vad": 11.5, "turn": 5.9, "short_lived": 4.7}}
    density.cpu_parts(run, before, after, 20.0)
    assert run.cpu_parts_pct == {
        "loop": 20.0, "vad": 7.5, "turn": 4.5, "short_lived": 8.5, "outside": 0.5,
    }  # fmt: skip
    fresh = density.Run(mode="coroutine", n=25)
    density.cpu_parts(fresh, {}, {"loop_lag_hist": []}, 20.0)
    assert fresh.cpu_parts_pct is None, "no per-thread clock (not Linux): no parts"


class _TurnsWorker:
    """What measure_window reads of a worker, answering a turn per snapshot taken."""

    alive = True
    proc = None

    def __init__(self) -> None:
        self.turns = 0
        self.snapshots = 0

    async def snapshot(self, timeout: float) -> dict[str, object]:
        self.snapshots += 1
        self.turns += 1
        return {
            "pid": 1,
            "call_stats": _stats(
                turn_latency_edges_ms=EDGES, turn_latency_hist=[0, 0, 0, self.turns, 0]
            ),
        }

    def cpu_seconds(self) -> float:
        return 0.0

    def pss_mb(self) -> tuple[float, int]:
        return 100.0, 1

    async def healthy(self) -> bool:
        return True


async def test_the_lone_window_lasts_until_enough_turns_were_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A p95 over a handful of turns is noise: the lone call's window waits for turns."""
    monkeypatch.setattr(density, "TURN_POLL_S", 0.0)
    worker = _TurnsWorker()
    run = density.Run(mode="coroutine", n=1)
    await density.measure_window(worker, run, 0.01, lambda: 1, None, min_turns=5)  # type: ignore[arg-type]
    assert run.turns_measured is not None and run.turns_measured >= 5
    short = density.Run(mode="coroutine", n=1)
    worker = _TurnsWorker()
    await density.measure_window(worker, short, 0.01, lambda: 1, None)  # type: ignore[arg-type]
    assert short.turns_measured == 1 and worker.snapshots == 2


async def test_the_lone_window_gives_up_waiting_for_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(density, "TURN_POLL_S", 0.0)
    monkeypatch.setattr(density, "LONE_MAX_S", 0.05)
    worker = _TurnsWorker()
    run = density.Run(mode="coroutine", n=1)
    started = time.monotonic()
    await density.measure_window(worker, run, 0.01, lambda: 1, None, min_turns=10**9)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5.0
    assert run.turns_measured is not None and run.turns_measured < 10**9
