"""A drained worker exits as soon as its last call ends, not at its next poll or timeout."""

from __future__ import annotations

import time
from pathlib import Path

from livekit.agents import Agent

from openrtc import AgentPool, SessionInfo, SessionOutcome
from openrtc.config import Deployment, OpsEndpoint, PoolConfig, Runtime, SelfProtection
from openrtc.deploy.manifest import sign_manifest
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.worker.lifespan import EXIT_OK
from tests.harness import running, wait_until

SECRET = "manifest-secret-for-tests"
SLOW_TICK_S = 5.0
"""The manifest poll and metrics file interval: far past the exit bound below."""
EXIT_BOUND_S = 2.0
"""Under the slow ticks above, livekit's 2.5 s status tick and the 1800 s drain timeout."""


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


async def test_a_drained_worker_exits_promptly_after_its_last_call_ends(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(sign_manifest(["v1.0.0"], secret=SECRET))
    pool = AgentPool(
        agents={"sales": Sales},
        deployment_version="v1.0.0",
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(
            runtime=Runtime(prewarm_models=False),
            deployment=Deployment(
                manifest=manifest, membership_secrets=[SECRET], manifest_poll_interval=SLOW_TICK_S
            ),
            ops=OpsEndpoint(
                metrics_jsonl=tmp_path / "metrics.jsonl", metrics_jsonl_interval=SLOW_TICK_S
            ),
            protection=SelfProtection(memory_limit_mb=1_000_000, slow_call_threshold_ms=1000),
        ),
    )
    call_ended: list[float] = []

    def on_end(info: SessionInfo, outcome: SessionOutcome) -> None:
        call_ended.append(time.monotonic())

    pool.add_end_listener(on_end)
    held = {"turns": ["hi"], "mode": "text", "pause_s": 0.0, "hold_s": 60.0}
    async with running(pool, devserver, http_port=0) as worker:
        exited: list[float] = []
        worker.task.add_done_callback(lambda _: exited.append(time.monotonic()))
        jobs = [await devserver.dispatch(simulated_call=held) for _ in range(2)]
        for job in jobs:
            await devserver.wait_job(job.id, {"running"})
        pool.begin_drain(reason="deploy", actor="test")
        await wait_until(lambda: devserver.worker(pool.worker_id).status == "WS_FULL")
        for job in jobs:
            await devserver.end_call(job.id)
        assert await worker.exit_code() == EXIT_OK
    assert len(call_ended) == 2
    assert exited[0] - max(call_ended) < EXIT_BOUND_S
    for job in jobs:
        assert devserver.job(job.id).state.value == "success"
