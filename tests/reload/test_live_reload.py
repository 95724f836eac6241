"""Hot reload over the wire: real workers, simulated calls, agent files edited mid-call."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from openrtc import AgentPool, SessionInfo, SessionOutcome, pin_reload
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.reload import HotReloader, ReloadPin
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

from .agentfiles import BROKEN, answered, reply, write_agent

ALPHA_V1 = "You are Alpha v1."
ALPHA_V2 = "You are Alpha v2."
BETA = "You are Beta v1."


def hot_pool(agents: Path, llm_latency: float, **kwargs: Any) -> AgentPool:
    pool = AgentPool(
        default_stt=FakeSTT(),
        default_llm=FakeLLM(latency=llm_latency),
        default_tts=FakeTTS(),
        **kwargs,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False, hot_reload=True)),
    )
    pool.discover(agents)
    return pool


def call(turns: tuple[str, ...], pause_s: float, hold_s: float = 0.0) -> dict[str, object]:
    return {"turns": list(turns), "mode": "text", "pause_s": pause_s, "hold_s": hold_s}


def session_of(pool: AgentPool, job_id: str) -> Any:
    """The call's AgentSession once its agent has started, else None."""
    for live in pool.live_sessions():
        if live.info.job_id == job_id and live.session is not None:
            try:
                live.session.current_agent  # noqa: B018 - raises until the agent starts
            except RuntimeError:
                return None
            return live.session
    return None


def replies(pool: AgentPool, job_id: str) -> list[str]:
    return [str(r) for r in pool.transcripts[job_id].replies]


def reloader_of(rp: Any) -> HotReloader:
    reloader = rp.lifespan.reloader
    assert isinstance(reloader, HotReloader)
    return reloader


async def answering_call(
    devserver: DispatchServer, pool: AgentPool, turns: tuple[str, ...]
) -> tuple[str, Any]:
    """Dispatch a call to alpha and wait until its agent has answered a first turn."""
    job = (
        await devserver.dispatch(metadata={"agent": "alpha"}, simulated_call=call(turns, 0.8))
    ).id
    await wait_until(lambda: session_of(pool, job) is not None)
    session = session_of(pool, job)
    await wait_until(lambda: answered(session) >= 1)
    return job, session


async def finish(devserver: DispatchServer, job_ids: list[str]) -> None:
    for job_id in job_ids:
        done = await devserver.wait_job(job_id, {"success", "failed"}, timeout=30)
        assert done.state.value == "success", done.to_dict()


async def test_an_edit_moves_each_live_call_of_that_agent_on_its_next_turn_and_no_other(
    tmp_path: Path, devserver: DispatchServer
) -> None:
    alpha = write_agent(tmp_path / "alpha.py", "Alpha", ALPHA_V1)
    write_agent(tmp_path / "beta.py", "Beta", BETA)
    pool = hot_pool(tmp_path, llm_latency=1.0)
    old_alpha = pool.get("alpha").agent_cls
    turns = ("one", "two", "three")
    async with running(pool, devserver) as rp:
        reloader = reloader_of(rp)
        assert reloader.watching
        alphas = [
            (
                await devserver.dispatch(
                    metadata={"agent": "alpha"}, simulated_call=call(turns, 1.0)
                )
            ).id
            for _ in range(2)
        ]
        beta = (
            await devserver.dispatch(metadata={"agent": "beta"}, simulated_call=call(turns, 1.0))
        ).id
        await wait_until(lambda: all(session_of(pool, j) is not None for j in [*alphas, beta]))
        sessions = {j: session_of(pool, j) for j in [*alphas, beta]}
        beta_cls = type(sessions[beta].current_agent)

        # save while both alpha calls are still thinking about turn one
        await wait_until(lambda: all(sessions[j].agent_state == "thinking" for j in alphas))
        write_agent(alpha, "Alpha", ALPHA_V2)
        await wait_until(lambda: pool.get("alpha").agent_cls is not old_alpha, timeout=5)
        assert [answered(sessions[j]) for j in alphas] == [0, 0], "the swap came too late"
        await wait_until(lambda: any(e.ok for e in reloader.events), timeout=10)

        late = (
            await devserver.dispatch(
                metadata={"agent": "alpha"}, simulated_call=call(("hi",), 0.1, hold_s=1.0)
            )
        ).id
        await wait_until(lambda: session_of(pool, late) is not None)
        late_session = session_of(pool, late)
        await wait_until(lambda: answered(late_session) > 0)
        late_cls = type(late_session.current_agent)
        await finish(devserver, [*alphas, beta, late])

    (event,) = [e for e in reloader.events if e.ok]
    assert event.agents == ("alpha",) and event.moved == 2 and event.path == str(alpha.resolve())
    new_alpha = pool.get("alpha").agent_cls
    for job in alphas:
        assert replies(pool, job) == [
            reply(ALPHA_V1, "one"),  # in flight when the file was saved: finished on old code
            reply(ALPHA_V2, "two"),
            reply(ALPHA_V2, "three"),
        ]
        assert type(sessions[job].current_agent) is new_alpha
    assert replies(pool, beta) == [reply(BETA, t) for t in turns]
    assert type(sessions[beta].current_agent) is beta_cls
    assert late_cls is new_alpha
    assert replies(pool, late) == [reply(ALPHA_V2, "hi")]


async def test_a_syntax_error_changes_nothing_and_is_reported_with_its_line(
    tmp_path: Path, devserver: DispatchServer
) -> None:
    alpha = write_agent(tmp_path / "alpha.py", "Alpha", ALPHA_V1)
    pool = hot_pool(tmp_path, llm_latency=0.2)
    running_cls = pool.get("alpha").agent_cls
    turns = ("one", "two", "three", "four", "five")
    async with running(pool, devserver) as rp:
        reloader = reloader_of(rp)
        job, session = await answering_call(devserver, pool, turns)

        write_agent(alpha, "Alpha", "You are Alpha broken.", template=BROKEN)
        await wait_until(lambda: reloader.last_error is not None, timeout=5)
        error = reloader.last_error
        # a turn that began after the bad save was reported
        seen = answered(session)
        await wait_until(lambda: answered(session) >= seen + 2, timeout=10)
        assert pool.get("alpha").agent_cls is running_cls

        write_agent(alpha, "Alpha", ALPHA_V2)
        await wait_until(lambda: any(e.ok for e in reloader.events), timeout=5)
        assert reloader.last_error is None
        await finish(devserver, [job])

    assert error is not None and f"{alpha.resolve()}:4: syntax error" in error
    assert "\n" not in error
    rejected = [e for e in reloader.events if not e.ok]
    assert len(rejected) == 1 and rejected[0].error == error
    got = replies(pool, job)
    assert got[seen + 1] == reply(ALPHA_V1, turns[seen + 1])
    assert got[-1] == reply(ALPHA_V2, turns[-1])
    versions = [ALPHA_V1 if r.startswith(ALPHA_V1) else ALPHA_V2 for r in got]
    assert versions == sorted(versions, key=[ALPHA_V1, ALPHA_V2].index)
    assert all("broken" not in r for r in got)


class PinMarkedCalls:
    """Pins every call whose dispatch metadata says "pin"; the test releases the pins."""

    def __init__(self) -> None:
        self.pins: dict[str, ReloadPin] = {}

    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        if info.metadata.get("pin"):
            self.pins[info.job_id] = pin_reload(session).__enter__()

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        return None


async def test_a_pinned_call_keeps_its_class_until_unpinned(
    tmp_path: Path, devserver: DispatchServer
) -> None:
    alpha = write_agent(tmp_path / "alpha.py", "Alpha", ALPHA_V1)
    pinner = PinMarkedCalls()
    pool = hot_pool(tmp_path, llm_latency=0.2, observers=[pinner])
    turns = ("one", "two", "three", "four")
    async with running(pool, devserver) as rp:
        reloader = reloader_of(rp)
        pinned = (
            await devserver.dispatch(
                metadata={"agent": "alpha", "pin": True}, simulated_call=call(turns, 0.8)
            )
        ).id
        free = (
            await devserver.dispatch(metadata={"agent": "alpha"}, simulated_call=call(turns, 0.8))
        ).id
        await wait_until(lambda: all(session_of(pool, j) is not None for j in (pinned, free)))
        sessions = {j: session_of(pool, j) for j in (pinned, free)}
        await wait_until(lambda: all(answered(s) >= 1 for s in sessions.values()))
        assert pinned in pinner.pins

        write_agent(alpha, "Alpha", ALPHA_V2)
        await wait_until(lambda: any(e.ok for e in reloader.events), timeout=5)
        await wait_until(lambda: answered(sessions[pinned]) >= 3, timeout=10)
        pinner.pins[pinned].release()
        await finish(devserver, [pinned, free])

    (event,) = list(reloader.events)
    assert (event.moved, event.pinned) == (1, 1)
    assert replies(pool, free) == [reply(ALPHA_V1, "one")] + [reply(ALPHA_V2, t) for t in turns[1:]]
    assert replies(pool, pinned) == [reply(ALPHA_V1, t) for t in turns[:3]] + [
        reply(ALPHA_V2, "four")
    ]


async def test_thread_isolation_moves_calls_on_their_own_loops(
    tmp_path: Path, devserver: DispatchServer
) -> None:
    alpha = write_agent(tmp_path / "alpha.py", "Alpha", ALPHA_V1)
    pool = hot_pool(tmp_path, llm_latency=0.2, isolation="thread")
    turns = ("one", "two", "three")
    async with running(pool, devserver) as rp:
        reloader = reloader_of(rp)
        job, _ = await answering_call(devserver, pool, turns)
        assert reloader.loops[job] is not asyncio.get_running_loop()
        write_agent(alpha, "Alpha", ALPHA_V2)
        await wait_until(lambda: any(e.ok for e in reloader.events), timeout=5)
        await finish(devserver, [job])
    (event,) = list(reloader.events)
    assert event.moved == 1
    assert replies(pool, job) == [reply(ALPHA_V1, "one")] + [reply(ALPHA_V2, t) for t in turns[1:]]
