"""The worker's one state machine: allowed moves only, every move reported."""

from __future__ import annotations

import threading

import pytest
from livekit.agents import Agent

from openrtc import AgentPool, WorkerState
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.lifecycle import IllegalTransition, Lifecycle, Transition
from tests.harness import running


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def test_the_deploy_path_and_its_reports() -> None:
    seen: list[Transition] = []
    lc = Lifecycle()
    lc.subscribe(seen.append)
    for to in (
        WorkerState.ACCEPTING,
        WorkerState.NOT_MEMBER,
        WorkerState.ACCEPTING,
        WorkerState.DRAINING,
        WorkerState.DRAINED,
        WorkerState.STOPPED,
    ):
        lc.move(to, reason=f"to {to}")
    assert [t.state for t in seen][-1] is WorkerState.STOPPED
    assert [(t.previous.value, t.state.value) for t in seen][:2] == [
        ("starting", "accepting"),
        ("accepting", "not_member"),
    ]
    assert lc.move(WorkerState.STOPPED, reason="again") is None


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([WorkerState.ACCEPTING, WorkerState.DRAINING], WorkerState.ACCEPTING),
        ([WorkerState.DRAINING, WorkerState.DRAINED], WorkerState.NOT_MEMBER),
        ([WorkerState.STOPPED], WorkerState.ACCEPTING),
    ],
)
def test_a_drain_is_never_undone(path: list[WorkerState], bad: WorkerState) -> None:
    lc = Lifecycle()
    for to in path:
        lc.move(to, reason="test")
    with pytest.raises(IllegalTransition, match=f"cannot go from {path[-1]} to {bad}"):
        lc.move(bad, reason="test")


def test_a_raising_listener_does_not_stop_the_move() -> None:
    lc = Lifecycle()
    lc.subscribe(lambda t: 1 / 0)  # type: ignore[func-returns-value]
    lc.move(WorkerState.ACCEPTING, reason="test")
    assert lc.state is WorkerState.ACCEPTING


async def test_begin_drain_from_other_threads_is_applied_once_on_the_loop(
    devserver: DispatchServer,
) -> None:
    events: list[str] = []
    pool = AgentPool(
        agents={"sales": Sales},
        audit_sink=lambda e: events.append(e.event),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver) as worker:
        threads = [
            threading.Thread(target=pool.begin_drain, kwargs={"reason": "ops", "actor": f"t{i}"})
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pool.runtime_snapshot().draining, "refusing from the moment it returns"
        assert await worker.exit_code() == 0
    assert [t.state for t in pool.lifecycle.history][-3:] == [
        WorkerState.DRAINING,
        WorkerState.DRAINED,
        WorkerState.STOPPED,
    ]
    assert events.count("deployment.drain_started") == 1
    assert pool.drain_request is not None and pool.drain_request.actor.startswith("t")


def test_snapshot_is_frozen_and_json_ready() -> None:
    import dataclasses
    import json

    pool = AgentPool(agents={"sales": Sales}, deployment_version="v9.9.9")
    snap = pool.runtime_snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.state = "x"  # type: ignore[misc]
    data = json.loads(json.dumps(snap.to_dict()))
    for key in (
        "deployment_version",
        "draining",
        "state",
        "active_sessions",
        "sessions_by_agent",
        "worker_id",
        "member",
        "accepted_total",
        "rejected_total",
        "started_at",
    ):
        assert key in data
    assert data["deployment_version"] == "v9.9.9"


def test_version_and_drain_timeout_come_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENRTC_DEPLOYMENT_VERSION", "v7.0.0")
    monkeypatch.setenv("OPENRTC_DRAIN_TIMEOUT", "42")
    pool = AgentPool(agents={"sales": Sales})
    assert (pool.deployment_version, pool.drain_timeout) == ("v7.0.0", 42.0)
    assert AgentPool(agents={"sales": Sales}, deployment_version="v8").deployment_version == "v8"
    monkeypatch.setenv("OPENRTC_DRAIN_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="OPENRTC_DRAIN_TIMEOUT='soon' is not a number"):
        AgentPool(agents={"sales": Sales})
