"""Percentiles, histogram percentiles, and summing PSS and CPU over a real process tree."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import psutil
import pytest
from benchkit import (
    hist_diff,
    hist_percentile,
    percentile,
    sum_cpu_seconds,
    sum_pss,
)

from openrtc.deploy.rehearsal.workers import process_tree


def test_percentile_is_nearest_rank() -> None:
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.5], 99) == 7.5
    assert percentile([1, 2, 3, 1000], 50) == 2


def test_percentile_of_nothing_is_none_and_bad_q_is_refused() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_hist_percentile_reports_the_bucket_upper_edge() -> None:
    edges = (1.0, 2.0, 5.0)
    counts = [0, 90, 9, 1]  # 90 in (1,2], 9 in (2,5], 1 past 5
    assert hist_percentile(edges, counts, 50) == 2.0
    assert hist_percentile(edges, counts, 99) == 5.0
    assert hist_percentile(edges, counts, 100) == math.inf
    assert hist_percentile(edges, [0, 0, 0, 0], 50) is None


def test_hist_diff_subtracts_two_readings() -> None:
    assert hist_diff([5, 7, 9], [1, 7, 2]) == [4, 0, 7]
    assert hist_diff([5, 7], None) == [5, 7]
    with pytest.raises(ValueError):
        hist_diff([1, 2], [1])


def test_sum_pss_covers_the_whole_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        procs = process_tree(os.getpid())
        pids = {p.pid for p in procs}
        assert child.pid in pids
        total, counted = sum_pss(procs)
        assert counted == len(procs)
        own = psutil.Process().memory_full_info().pss
        child_pss = psutil.Process(child.pid).memory_full_info().pss
        assert child_pss > 0
        assert total > own
    finally:
        child.kill()
        child.wait()


def test_sum_pss_skips_a_process_that_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = psutil.Process(child.pid)
    child.wait()
    total, counted = sum_pss([psutil.Process(), gone])
    assert counted == 1
    assert total == pytest.approx(psutil.Process().memory_full_info().pss, rel=0.2)


def test_cpu_of_reaped_children_is_counted() -> None:
    me = [psutil.Process()]
    before = sum_cpu_seconds(me)
    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert sum_cpu_seconds(me) - before >= 0.3
