"""The CPU the load counts: threads at the process's own priority, not the nicer ones."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from openrtc.ops import thread_cpu
from openrtc.turn.predictor import lower_thread_priority

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread niceness and /proc are Linux's"
)


def spin(seconds: float, nicer: int = 0) -> threading.Thread:
    def run() -> None:
        if nicer:
            assert lower_thread_priority(nicer)
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_nicer_thread_is_left_out_and_one_at_the_process_priority_counts() -> None:
    assert thread_cpu.available()
    cpu = thread_cpu.OwnPriorityCpu()
    spin(0.4, nicer=10).join()
    assert cpu.read() < 0.15, "a thread made nicer is not the calls' CPU"
    thread = spin(0.6)
    time.sleep(0.3)
    assert cpu.read() >= 0.15, "a running thread at the process's priority counts"
    thread.join()
