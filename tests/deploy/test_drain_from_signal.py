"""begin_drain from a plain signal handler that interrupted the loop thread mid-update."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from livekit.agents import Agent

from openrtc import AgentPool
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


@contextmanager
def drain_on_sigusr1(pool: AgentPool) -> Iterator[list[int]]:
    """A user's own handler, installed with signal.signal: it runs on the main thread."""
    handled: list[int] = []

    def handler(signum: int, frame: object) -> None:
        pool.begin_drain(reason="SIGUSR1")
        handled.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        yield handled
    finally:
        signal.signal(signal.SIGUSR1, previous)


def signal_self_and_wait(handled: list[int]) -> None:
    """Send SIGUSR1 and spin (no await) until Python ran the handler on this thread."""
    os.kill(os.getpid(), signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not handled and time.monotonic() < deadline:
        time.sleep(0.001)
    assert handled, "the signal handler never ran"


def make_pool() -> AgentPool:
    return AgentPool(
        agents={"sales": Sales},
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )


async def test_a_signal_during_a_state_change_drains_without_deadlock(
    devserver: DispatchServer,
) -> None:
    pool = make_pool()
    async with running(pool, devserver):
        await wait_until(lambda: pool.state.value == "accepting")
        with drain_on_sigusr1(pool) as handled:
            # the loop thread holds the lifecycle lock, as inside move(), when the signal lands
            with pool.lifecycle._lock:
                signal_self_and_wait(handled)
                assert pool.state.value == "accepting"
            await wait_until(lambda: pool.state.value in ("draining", "drained", "stopped"))
    assert [t.reason for t in pool.lifecycle.history if t.state.value == "draining"] == ["SIGUSR1"]


async def test_a_signal_while_the_audit_log_writes_drains_without_deadlock(
    devserver: DispatchServer,
) -> None:
    pool = make_pool()
    async with running(pool, devserver):
        await wait_until(lambda: pool.state.value == "accepting")
        with drain_on_sigusr1(pool) as handled, pool.audit_log._lock:
            signal_self_and_wait(handled)
            assert pool.state.value == "accepting"
        await wait_until(lambda: pool.state.value in ("draining", "drained", "stopped"))


async def test_offers_are_refused_from_the_moment_begin_drain_returns(
    devserver: DispatchServer,
) -> None:
    pool = make_pool()
    async with running(pool, devserver):
        await wait_until(lambda: pool.state.value == "accepting")
        pool.begin_drain(reason="now")
        assert pool.runtime_snapshot().draining
        assert pool.admission_state().value == "draining"
        job = await devserver.dispatch(simulated_call={"turns": ["hi"], "mode": "text"})
        done = await devserver.wait_job(job.id, {"success", "failed", "unserved"}, timeout=15)
        assert done.state.value == "unserved"
        await wait_until(lambda: pool.state.value in ("draining", "drained", "stopped"))
