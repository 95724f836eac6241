"""CPU by part: each thread's own clock, read from /proc, under the part it works for."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from openrtc.ops.thread_cpu import PARTS, ThreadCPU
from openrtc.turn import THREAD_NAME as TURN_THREAD
from openrtc.vad import THREAD_NAME as VAD_THREAD

pytestmark = pytest.mark.serial

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(1000))


def _stat(tid: int, name: str, ticks: tuple[int, int], nice: int) -> str:
    fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0"]
    fields += [str(ticks[0]), str(ticks[1]), "0", "0", "20", str(nice)]
    return f"{tid} ({name}) " + " ".join(fields) + " 1 0 0\n"


def _fake_tasks(root: Path, rows: dict[int, tuple[str, tuple[int, int], int]]) -> Path:
    for tid, (name, ticks, nice) in rows.items():
        (root / str(tid)).mkdir()
        (root / str(tid) / "stat").write_text(_stat(tid, name, ticks, nice))
    return root


@linux_only
def test_threads_are_counted_under_the_part_they_work_for() -> None:
    cpu = ThreadCPU()
    before = cpu.read()
    assert before is not None and set(before) == set(PARTS)

    def loop_thread() -> None:
        cpu.note_loop_thread()
        _burn(0.2)
        done.wait()

    def vad_thread() -> None:
        _burn(0.2)
        done.wait()

    def turn_thread() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
        _burn(0.2)
        done.wait()

    done = threading.Event()
    threads = [
        threading.Thread(target=loop_thread, name="a call loop"),
        threading.Thread(target=vad_thread, name=f"{VAD_THREAD}_0"),
        threading.Thread(target=turn_thread, name=TURN_THREAD),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until each has burnt its share and waits
        time.sleep(0.05)
        reading = cpu.read()
        assert reading is not None
        if all(reading[k] - before[k] >= 0.19 for k in ("loop", "vad", "turn")):
            break
    after = cpu.read()
    done.set()
    for t in threads:
        t.join()
    assert after is not None
    spent = {k: after[k] - before[k] for k in PARTS}
    for part in ("loop", "vad", "turn"):
        assert 0.15 <= spent[part] <= 0.35, (part, spent)
    assert spent["other"] < 0.15, spent
    final = cpu.read()
    assert final is not None and final["loop"] >= after["loop"], "an exited thread keeps its count"


def test_native_threads_nicer_than_the_process_count_as_the_turn_models(tmp_path: Path) -> None:
    """The end-of-turn model's own threads have no Python name; they inherit the turn
    thread's lowered priority, which nothing else in the process has."""
    tasks = _fake_tasks(
        tmp_path,
        {
            999_001: ("openrtc", (500, 100), 0),  # no Python thread with this id
            999_002: ("openrtc", (30, 10), 10),  # a nicer native thread: the model's
            999_003: ("weird) name (x", (7, 3), 10),  # a name with parentheses
        },
    )
    cpu = ThreadCPU(tasks=tasks)
    parts = cpu.read()
    assert parts is not None
    tick = os.sysconf("SC_CLK_TCK")
    assert parts["turn"] == pytest.approx(50 / tick, abs=1e-3)
    assert parts["loop"] == 0 and parts["vad"] == 0
    assert parts["other"] >= 0


def test_a_torn_or_missing_stat_file_is_skipped(tmp_path: Path) -> None:
    tasks = _fake_tasks(
        tmp_path, {999_003: ("openrtc", (10, 0), 0), 999_004: ("openrtc", (10, 0), 10)}
    )
    (tmp_path / "999005").mkdir()
    (tmp_path / "999005" / "stat").write_text("999005 (openrtc) S 1")  # cut short
    (tmp_path / "999006").mkdir()  # the thread exited between listing and reading
    parts = ThreadCPU(tasks=tasks).read()
    assert parts is not None and parts["turn"] > 0


def test_without_proc_there_is_no_reading(tmp_path: Path) -> None:
    assert ThreadCPU(tasks=tmp_path / "absent").read() is None


@linux_only
def test_a_thread_no_reading_saw_counts_as_short_lived_and_one_seen_keeps_its_part() -> None:
    cpu = ThreadCPU()
    before = cpu.read()
    assert before is not None
    unseen = threading.Thread(target=_burn, args=(0.2,), name=f"{VAD_THREAD}_unseen")
    unseen.start()
    unseen.join()
    middle = cpu.read()
    assert middle is not None
    assert middle["short_lived"] - before["short_lived"] >= 0.15, (before, middle)
    assert middle["vad"] == before["vad"], "never seen: its name is unknown"

    go = threading.Event()

    def seen_then_exits() -> None:
        _burn(0.2)
        go.wait()

    seen = threading.Thread(target=seen_then_exits, name=f"{VAD_THREAD}_seen")
    seen.start()
    while (reading := cpu.read()) is not None and reading["vad"] - middle["vad"] < 0.19:
        time.sleep(0.02)
    go.set()
    seen.join()
    after = cpu.read()
    assert after is not None
    assert after["vad"] - middle["vad"] >= 0.19, "an exited thread keeps its last reading"
    assert after["short_lived"] - middle["short_lived"] < 0.1
    assert seen.native_id is not None
    assert seen.native_id not in cpu._live, "an exited thread is folded into its part"
