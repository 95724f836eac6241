"""The worker the CPU tools measure: a coroutine AgentPool with probes inside, one process.

Run as `python bench/cpu_worker.py STATS` (the CPU tools start it through
`benchkit.Worker`); it registers with the dispatch server named by LIVEKIT_URL and serves
calls of one agent, `bench`, with fake STT/LLM/TTS and the real VAD and end-of-turn model.
Once a second it appends one JSON line to STATS: its process CPU, live calls, event-loop
lag samples, CPU per thread, garbage-collection pauses and VAD work (the shared batcher's
counters, or pushes and inferences counted on the stock Silero streams).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATS_INTERVAL = 1.0
"""Seconds between two lines of STATS."""
LAG_TICK = 0.02
"""The lag probe's sleep: each sample is how much later than this it woke."""


class Probe:
    """Counts VAD work and samples loop lag inside the worker; one JSON line a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lags: list[float] = []
        self.inferences = 0
        self.pushes = 0
        self.streams: list[Any] = []
        self.live_calls: Callable[[], int] = lambda: 0
        self.shared_stats: Callable[[], dict[str, Any]] | None = None

    def watch_gc(self) -> None:
        """Record how long each garbage collection holds the loop, per generation."""
        import gc

        started = [0.0]
        self.gc_pauses: list[tuple[int, float]] = []

        def callback(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                self.gc_pauses.append((info["generation"], time.perf_counter() - started[0]))

        gc.callbacks.append(callback)

    def watch_stock_vad(self, vad: Any) -> None:
        """Count pushes and inference events of every stock Silero stream (bench only)."""
        make_stream = vad.stream

        def stream() -> Any:
            s = make_stream()
            self.streams.append(s)
            push, send = s.push_frame, s._event_ch.send_nowait

            def counted_push(frame: Any) -> None:
                self.pushes += 1
                push(frame)

            def counted_send(ev: Any) -> None:
                if ev.type.value == "inference_done":
                    self.inferences += 1
                send(ev)

            s.push_frame = counted_push
            s._event_ch.send_nowait = counted_send
            return s

        vad.stream = stream

    def live_streams(self) -> int:
        self.streams = [s for s in self.streams if not s._task.done()]
        return len(self.streams)

    async def lag_ticker(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LAG_TICK)
            self.lags.append(max(0.0, time.perf_counter() - before - LAG_TICK))

    @staticmethod
    def thread_cpu() -> dict[str, float]:
        """CPU seconds per thread family (names without their number), from the OS."""
        import re
        import threading

        import psutil

        names = {t.native_id: t.name for t in threading.enumerate()}
        out: dict[str, float] = {}
        for t in psutil.Process().threads():
            name = re.sub(r"[_-]?\d+$", "", names.get(t.id, "native (no Python)"))
            out[name] = out.get(name, 0.0) + t.user_time + t.system_time
        return out

    async def writer(self) -> None:
        with self.path.open("a") as out:
            while True:
                await asyncio.sleep(STATS_INTERVAL)
                line: dict[str, Any] = {
                    "t": time.time(),
                    "cpu": time.process_time(),
                    "live_calls": self.live_calls(),
                    "lags": self.lags,
                    "threads": self.thread_cpu(),
                    "gc": self.gc_pauses,
                }
                self.lags = []
                self.gc_pauses = []
                if self.shared_stats is not None:
                    line.update(self.shared_stats())
                else:
                    line.update(
                        inferences=self.inferences,
                        pushes=self.pushes,
                        streams=self.live_streams(),
                    )
                out.write(json.dumps(line) + "\n")
                out.flush()


async def serve(stats_path: Path) -> int:
    from livekit.agents import Agent

    from openrtc import AgentPool
    from openrtc.config import OpsEndpoint
    from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
    from openrtc.worker import models
    from openrtc.worker.lifespan import Lifespan, capture_signals
    from openrtc.worker.server import PoolServer

    class BenchAgent(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="You are the bench agent.\nAnswer briefly.")

    pool = AgentPool(
        agents={"bench": BenchAgent},
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        isolation="coroutine",
        drain_timeout=10.0,
    )
    probe = Probe(stats_path)
    probe.live_calls = lambda: len(pool.live_sessions())
    probe.watch_gc()
    loaded = await asyncio.to_thread(models.shared_models)
    if pool.config.runtime.uses_shared_vad:
        probe.shared_stats = models.shared_vad().batcher().stats
    else:
        probe.watch_stock_vad(loaded.vad)
    server = PoolServer(
        pool,
        ws_url=os.environ["LIVEKIT_URL"],
        api_key=os.environ["LIVEKIT_API_KEY"],
        api_secret=os.environ["LIVEKIT_API_SECRET"],
    )
    lifespan = Lifespan(pool, server, ops=OpsEndpoint(port=None))
    tasks = [asyncio.create_task(probe.lag_ticker()), asyncio.create_task(probe.writer())]
    try:
        with capture_signals(asyncio.get_running_loop(), lifespan.on_signal):
            return await lifespan.run()
    finally:
        for task in tasks:
            task.cancel()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: cpu_worker.py STATS (the JSON-lines file to append stats to)")
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(serve(Path(args[0]))))


if __name__ == "__main__":
    main()
