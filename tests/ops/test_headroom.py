"""Back-pressure: a worker reports its measured load and refuses offers at the threshold.

The estimator is tested on a fake clock; the worker over the wire, with its event loop
blocked in bursts (the test shares the worker's loop, so a burst blocks the worker).
Timing assertions say which way the load moves, never by exactly how much.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from livekit.agents import Agent
from prometheus_client.parser import text_string_to_metric_families

from openrtc import AgentPool
from openrtc.audit import AuditEvent
from openrtc.config import Limits, PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.errors import ConfigError
from openrtc.ops.headroom import COMPONENTS, LoadEstimator, LoopBusy
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.turn import TurnPredictor
from openrtc.turn import predictor as turn_predictor
from openrtc.turn.predictor import Request
from tests.harness import running, wait_until

FAKES = {"default_stt": FakeSTT(), "default_llm": FakeLLM(), "default_tts": FakeTTS()}
TICK = 0.25


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def call(hold_s: float = 0.0) -> dict[str, object]:
    return {"turns": ["hello"], "mode": "text", "pause_s": 0.0, "hold_s": hold_s}


# --- the estimator, on a fake clock --------------------------------------------------------


def feed(est: LoadEstimator, start: float, seconds: float, **readings: float) -> float:
    """Tick every TICK s for `seconds` with the same readings; returns the end time."""
    now = start
    while now < start + seconds - 1e-9:
        now += TICK
        est.update(now, readings)
    return now


def test_one_spike_does_not_flap_the_worker_to_full() -> None:
    est = LoadEstimator(0.7)
    est.update(0.0, {})
    now = feed(est, 0.0, 10.0, loop_lag=0.1, cpu=0.2)
    quiet = est.load
    # one reading of a loop stalled for 5 s (the reading lands 5 s after the last one)
    now += 5.0
    assert est.update(now, {"loop_lag": 50.0, "cpu": 0.2}) is False
    assert not est.overloaded and est.load < 0.7
    assert est.load > quiet  # it was seen, only weighed as one tick
    assert est.components["loop_lag"] < 0.1 + 0.4 * (1.0 - 0.1)
    history = []
    for _ in range(40):
        now += TICK
        est.update(now, {"loop_lag": 0.1, "cpu": 0.2})
        history.append(est.overloaded)
    assert not any(history)
    assert est.load < 0.2


def test_sustained_pressure_fills_the_worker_and_it_recovers_with_hysteresis() -> None:
    est = LoadEstimator(0.7)
    est.update(0.0, {})
    now, seen = 0.0, []
    while not est.overloaded:
        now += TICK
        est.update(now, {"loop_lag": 1.0, "vad_backlog": 0.3, "cpu": 0.4})
        seen.append(est.load)
        assert now < 2.0, "a sustained 1.0 fills the worker within a second (rise 0.5 s)"
    assert now >= 2 * TICK, "one reading alone does not fill the worker"
    assert seen == sorted(seen)
    assert est.why == "loop_lag" and est.reported == 1.0
    # pressure gone: the load falls; the worker stays full until it is well below
    flips = []
    while est.overloaded:
        now += TICK
        flips.append(est.update(now, {"loop_lag": 0.0, "vad_backlog": 0.0, "cpu": 0.1}))
        if est.overloaded:
            assert est.load >= est.resume_below
    assert flips.count(True) == 1
    assert est.load < 0.7 - 0.05 and est.reported == est.load


def test_a_load_hovering_at_the_threshold_flips_at_most_once() -> None:
    est = LoadEstimator(0.7)
    est.update(0.0, {})
    now, flips = 0.0, 0
    for i in range(400):
        now += TICK
        flips += est.update(now, {"cpu": 0.78 if i % 2 else 0.62})
    assert flips <= 1


def test_cpu_rises_slower_than_the_measures_of_harm_and_gets_there() -> None:
    est = LoadEstimator(0.9)
    est.update(0.0, {})
    now = feed(est, 0.0, 0.5, loop_lag=1.0, cpu=1.0)
    assert est.components["cpu"] < est.components["loop_lag"] - 0.1, est.components
    feed(est, now, 5.0, loop_lag=1.0, cpu=1.0)
    assert est.components["cpu"] > 0.95 and est.overloaded


def test_why_names_the_dominant_measure_and_readings_are_clamped() -> None:
    est = LoadEstimator(0.9)
    est.update(0.0, {})
    feed(est, 0.0, 20.0, loop_lag=0.1, vad_backlog=7.0, cpu=-3.0)
    assert est.why == "vad_backlog"
    assert est.components["cpu"] == 0.0
    assert 0.99 < est.components["vad_backlog"] <= 1.0
    assert set(est.components) == set(COMPONENTS)


@pytest.mark.serial
def test_loop_busy_reads_the_calling_threads_cpu_not_the_wall_clock() -> None:
    busy = LoopBusy()
    time.sleep(0.2)
    assert busy() < 0.3
    until = time.perf_counter() + 0.2
    while time.perf_counter() < until:
        pass
    assert busy() > 0.6


def test_load_threshold_is_a_setting_between_0_and_1() -> None:
    assert Limits().load_threshold == 0.7
    config = PoolConfig.from_env({"OPENRTC_LOAD_THRESHOLD": "0.5"})
    assert config.limits.load_threshold == 0.5
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"load_threshold \(--load-threshold"):
            Limits(load_threshold=bad)
    with pytest.raises(ConfigError, match="OPENRTC_LOAD_THRESHOLD"):
        PoolConfig.from_env({"OPENRTC_LOAD_THRESHOLD": "high"})


# --- over the wire ------------------------------------------------------------------------


class Pressure:
    """Blocks the event loop in bursts (as an agent's blocking code would) while on."""

    def __init__(self, block_s: float = 0.2, gap_s: float = 0.05) -> None:
        self.block_s, self.gap_s = block_s, gap_s
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            time.sleep(self.block_s)
            await asyncio.sleep(self.gap_s)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class BusyLoop(Pressure):
    """Keeps the event loop's thread computing in 2 ms slices, yielding between them: as
    many calls' frames would. The loop never lags much; it has no time left over."""

    async def _run(self) -> None:
        while True:
            until = time.perf_counter() + 0.002
            while time.perf_counter() < until:
                pass
            await asyncio.sleep(0)


@pytest.fixture
async def pressure() -> AsyncIterator[Pressure]:
    p = Pressure()
    yield p
    if p.task is not None:
        await p.stop()


async def get(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.text()


def metric_values(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("component", ""))] = s.value
    return out


def make_pool(cap: int | None, events: list[AuditEvent]) -> AgentPool:
    return AgentPool(
        agents={"sales": Sales},
        max_concurrent_sessions=cap,
        audit_sink=events.append,
        **FAKES,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )


async def watch_loads(worker: Any, seen: list[tuple[str, float]]) -> None:
    while True:
        if not seen or seen[-1] != (worker.status, worker.load):
            seen.append((worker.status, worker.load))
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("cap", [None, 10])
async def test_a_lagging_worker_reports_rising_load_goes_full_refuses_and_recovers(
    devserver: DispatchServer, pressure: Pressure, cap: int | None
) -> None:
    events: list[AuditEvent] = []
    pool = make_pool(cap, events)
    seen: list[tuple[str, float]] = []
    async with running(pool, devserver, http_port=0) as run:
        ops = run.lifespan.ops
        assert ops is not None
        worker = devserver.worker(pool.worker_id)
        held = await devserver.dispatch(simulated_call=call(hold_s=120))
        await wait_until(lambda: pool.admitted == 1)
        base = 0.0 if cap is None else 1 / cap
        await wait_until(lambda: abs(worker.load - base) < 0.05 and worker.status == "WS_AVAILABLE")
        watcher = asyncio.create_task(watch_loads(worker, seen))
        try:
            pressure.start()
            await wait_until(lambda: worker.status == "WS_FULL", timeout=45)
        finally:
            watcher.cancel()
        # the server heard the load climb before it heard "full"
        loads = [load for status, load in seen if status == "WS_AVAILABLE"]
        assert len({round(x, 3) for x in loads}) >= 3, seen
        assert max(loads) > loads[0] + 0.2, seen
        assert worker.load == 1.0

        # what /metrics and /snapshot say while full: the load and why
        metrics = metric_values(await get(f"{ops.url}/metrics"))
        assert metrics[("openrtc_load", "")] == 1.0
        assert metrics[("openrtc_overloaded", "")] == 1.0
        assert metrics[("openrtc_load_component", "loop_lag")] >= 0.6
        assert metrics[("openrtc_load_threshold", "")] == 0.7
        snap = json.loads(await get(f"{ops.url}/snapshot"))
        assert snap["load"]["overloaded"] is True
        assert snap["load"]["why"] == "loop_lag"
        assert snap["load"]["reported"] == 1.0

        # a server that has not heard yet still offers: the worker refuses, as overloaded
        worker.status = "WS_AVAILABLE"
        refused = await devserver.dispatch(simulated_call=call(), deadline=3.0)
        done = await devserver.wait_job(refused.id, {"unserved", "success", "failed"}, 30)
        assert done.state.value == "unserved"
        rejected = pool.runtime_snapshot().rejected_total
        assert rejected.get("overloaded", 0) >= 1 and set(rejected) == {"overloaded"}
        audited = [e for e in events if e.event == "worker.rejected"]
        assert audited and all(e.fields["reason"] == "overloaded" for e in audited)

        # pressure gone: the load falls, the worker takes calls again
        await pressure.stop()
        await wait_until(lambda: worker.status == "WS_AVAILABLE", timeout=45)
        assert worker.load < 0.7
        job = await devserver.dispatch(simulated_call=call())
        ok = await devserver.wait_job(job.id, {"success", "failed", "unserved"}, timeout=30)
        assert ok.state.value == "success"
        await devserver.end_call(held.id)
    assert pool.runtime_snapshot().accepted_total == 2


@pytest.mark.serial
async def test_a_loop_busy_in_short_slices_fills_the_worker_though_it_barely_lags(
    devserver: DispatchServer,
) -> None:
    events: list[AuditEvent] = []
    pool = make_pool(None, events)
    busy = BusyLoop()
    async with running(pool, devserver, http_port=0) as run:
        ops = run.lifespan.ops
        assert ops is not None
        worker = devserver.worker(pool.worker_id)
        await wait_until(lambda: worker.status == "WS_AVAILABLE" and worker.load < 0.3)
        busy.start()
        try:
            await wait_until(lambda: worker.status == "WS_FULL", timeout=30)
            snap = json.loads(await get(f"{ops.url}/snapshot"))
            metrics = metric_values(await get(f"{ops.url}/metrics"))
        finally:
            await busy.stop()
        assert snap["load"]["why"] == "loop_busy", snap["load"]
        assert snap["load"]["components"]["loop_lag"] < 0.7, snap["load"]
        assert metrics[("openrtc_load_component", "loop_busy")] >= 0.7
        await wait_until(lambda: worker.status == "WS_AVAILABLE", timeout=45)
        assert run.lifespan.headroom.estimator.components["loop_busy"] < 0.6


class _Waiting:
    """A stream that keeps wanting its one end-of-turn request (the predictor's Requester)."""

    closed = False

    def wants(self, request_id: str) -> bool:
        return True

    def resolve(
        self, request_id: str, probability: float, seconds: float, error: BaseException | None
    ) -> None:
        return None


async def test_an_end_of_turn_model_falling_behind_fills_the_worker(
    devserver: DispatchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()

    def starved(pcm: Any) -> float:  # as the nicer model thread is when no CPU is left
        gate.wait(30)
        return 0.5

    predictor = TurnPredictor(starved, name="openrtc-turn-starved")
    monkeypatch.setattr(turn_predictor, "_shared", predictor)
    pool = make_pool(None, [])
    try:
        async with running(pool, devserver, http_port=0) as run:
            ops = run.lifespan.ops
            assert ops is not None
            worker = devserver.worker(pool.worker_id)
            await wait_until(lambda: worker.status == "WS_AVAILABLE")
            loop = asyncio.get_running_loop()
            for i in range(2):
                predictor.submit(
                    Request(_Waiting(), f"r{i}", np.zeros(160, np.int16), loop,
                            contextvars.copy_context(), time.perf_counter())
                )  # fmt: skip
            await wait_until(lambda: worker.status == "WS_FULL", timeout=30)
            snap = json.loads(await get(f"{ops.url}/snapshot"))
            assert snap["load"]["why"] == "turn_backlog", snap["load"]
            metrics = metric_values(await get(f"{ops.url}/metrics"))
            assert metrics[("openrtc_load_component", "turn_backlog")] >= 0.7
            gate.set()
            await wait_until(lambda: worker.status == "WS_AVAILABLE", timeout=45)
            assert predictor.behind_s() == 0.0
    finally:
        gate.set()
        predictor.close()


async def test_with_a_cap_the_cap_still_refuses_exactly_at_n(devserver: DispatchServer) -> None:
    events: list[AuditEvent] = []
    pool = make_pool(3, events)
    async with running(pool, devserver) as run:
        worker = devserver.worker(pool.worker_id)
        jobs = await asyncio.gather(
            *(devserver.dispatch(simulated_call=call(hold_s=3.0), deadline=1.5) for _ in range(8))
        )
        await wait_until(lambda: worker.status == "WS_FULL")
        assert worker.load == 1.0
        done = await asyncio.gather(
            *(devserver.wait_job(j.id, {"success", "failed", "unserved"}, 30) for j in jobs)
        )
        assert not run.lifespan.headroom.estimator.overloaded
    states = sorted(d.state.value for d in done)
    assert states.count("success") == 3 and states.count("unserved") == 5
    snap = pool.runtime_snapshot()
    assert snap.accepted_total == 3
    assert set(snap.rejected_total) == {"at_capacity"}


async def test_the_reported_load_is_admitted_over_cap_while_the_measure_is_lower(
    devserver: DispatchServer,
) -> None:
    pool = make_pool(4, [])
    async with running(pool, devserver) as run:
        worker = devserver.worker(pool.worker_id)
        held = [await devserver.dispatch(simulated_call=call(hold_s=60)) for _ in range(2)]
        await wait_until(lambda: pool.admitted == 2)
        await wait_until(lambda: worker.load == 0.5)
        headroom = run.lifespan.headroom
        assert headroom.estimator.load < 0.5
        assert headroom.to_dict()["why"] == "cap"
        for job in held:
            await devserver.end_call(job.id)
        await wait_until(lambda: pool.admitted == 0)
        await wait_until(lambda: worker.load < 0.25)
        assert headroom.to_dict()["why"] in COMPONENTS
