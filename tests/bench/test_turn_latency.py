"""Turn latency over the wire: a real worker, the loopback dispatch server, a simulated caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from benchkit import Worker, hist_diff, hist_percentile, server_env

from openrtc.devserver import DispatchServer
from openrtc.simulation import CallScript

pytestmark = [pytest.mark.timeout(120), pytest.mark.serial]


@pytest.mark.parametrize("noise_dbfs", [None, -60.0], ids=["silent line", "noisy line"])
async def test_a_real_call_records_one_plausible_latency_per_turn(
    tmp_path: Path, noise_dbfs: float | None
) -> None:
    turns = ("hello there", "what time do you open")
    script = CallScript(
        turns=turns, mode="audio", pause_s=0.2, hold_s=0.2, noise_dbfs=noise_dbfs
    ).to_dict()
    async with DispatchServer(dispatch_deadline=10.0, offer_timeout=5.0) as server:
        w = Worker(
            args=["--deployment-version", "latency"],
            env={**server_env(server), "OPENRTC_CALL_STATS": "1"},
            log_path=tmp_path / "w.log",
        )
        try:
            await w.start()
            await w.wait_accepting(60.0)
            before = (await w.snapshot() or {}).get("call_stats") or {}
            job = await server.dispatch(metadata={"agent": "sales"}, simulated_call=script)
            ending = asyncio.ensure_future(
                server.wait_job(job.id, {"success", "failed"}, timeout=60.0)
            )
            live: list[dict[str, float]] = []  # CPU by part, read while the call runs
            while not ending.done():
                stats = (await w.snapshot() or {}).get("call_stats") or {}
                if stats.get("vad_streams_open"):
                    live.append(stats["thread_cpu_s"])
                await asyncio.wait({ending}, timeout=0.3)
            await ending
            assert job.state.value == "success", job.error
            await asyncio.sleep(0.2)
            after = (await w.snapshot() or {})["call_stats"]
        finally:
            await w.kill()
    hist = hist_diff(after["turn_latency_hist"], before.get("turn_latency_hist"))
    edges = after["turn_latency_edges_ms"]
    assert sum(hist) == len(turns), "one latency per turn"
    fastest, slowest = hist_percentile(edges, hist, 0), hist_percentile(edges, hist, 100)
    assert fastest is not None and slowest is not None
    # end-pointing alone waits 0.55 s of silence; an idle worker answers well within 5 s
    assert 550 <= fastest <= slowest < 5000, (fastest, slowest)
    assert live, "no reading while the call ran"
    cpu, was = live[-1], before.get("thread_cpu_s") or {}
    spent = {part: cpu[part] - was.get(part, 0.0) for part in ("loop", "vad", "turn")}
    assert spent["loop"] > 0 and spent["turn"] > 0, (cpu, was)
    assert spent["vad"] == 0, "livekit's native Silero runs on the loop, not the VAD thread"
