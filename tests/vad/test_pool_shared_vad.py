"""The pool's shared_vad option, and audio calls over the wire with the shared VAD on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import typer
from livekit.plugins import silero
from typer.testing import CliRunner

from openrtc import AgentPool
from openrtc.cli import pool_options as po
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.errors import ConfigError
from openrtc.sessions import SessionInfo, SessionOutcome
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.vad import SharedVAD
from openrtc.worker import models
from tests.harness import running

from ..worker.agents import SalesAgent, SupportAgent

pytestmark = pytest.mark.timeout(90)
AGENTS = {"sales": SalesAgent, "support": SupportAgent}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENRTC_SHARED_VAD", raising=False)


def test_on_by_default_in_coroutine_isolation_only() -> None:
    assert AgentPool(AGENTS).config.runtime.uses_shared_vad is True
    assert AgentPool(AGENTS, isolation="thread").config.runtime.uses_shared_vad is False
    assert AgentPool(AGENTS, isolation="process").config.runtime.uses_shared_vad is False
    assert (
        AgentPool(
            AGENTS, config=PoolConfig.from_env(runtime=Runtime(shared_vad=False))
        ).config.runtime.uses_shared_vad
        is False
    )
    assert (
        AgentPool(
            AGENTS, isolation="thread", config=PoolConfig.from_env(runtime=Runtime(shared_vad=True))
        ).config.runtime.uses_shared_vad
        is True
    )


def test_the_environment_sets_it_and_a_bad_value_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENRTC_SHARED_VAD", "off")
    assert AgentPool(AGENTS).config.runtime.uses_shared_vad is False
    assert (
        AgentPool(
            AGENTS, config=PoolConfig.from_env(runtime=Runtime(shared_vad=True))
        ).config.runtime.uses_shared_vad
        is True
    ), "the argument wins"
    monkeypatch.setenv("OPENRTC_SHARED_VAD", "1")
    assert AgentPool(AGENTS, isolation="thread").config.runtime.uses_shared_vad is True
    monkeypatch.setenv("OPENRTC_SHARED_VAD", "maybe")
    with pytest.raises(ConfigError, match="OPENRTC_SHARED_VAD"):
        AgentPool(AGENTS)


def test_the_cli_flag_reaches_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool | None] = []
    app = typer.Typer()

    @app.command()
    @po.pool_flags
    def start(config: PoolConfig = po.DEFAULTS) -> None:
        seen.append(po.build_pool(config, EXAMPLES).config.runtime.uses_shared_vad)

    runner = CliRunner()
    assert runner.invoke(app, ["--no-shared-vad"]).exit_code == 0
    assert runner.invoke(app, []).exit_code == 0
    assert runner.invoke(app, [], env={"OPENRTC_SHARED_VAD": "false"}).exit_code == 0
    assert seen == [False, True, False]


class _VADKinds:
    """Records which VAD object each call's session got."""

    def __init__(self) -> None:
        self.vads: list[Any] = []

    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        self.vads.append(session.vad)

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        return None


@pytest.mark.parametrize(("setting", "runs_on"), [("auto", "native"), ("onnx", "onnx")])
async def test_audio_calls_complete_with_speech_heard_by_the_shared_vad(
    devserver: DispatchServer, setting: Any, runs_on: str
) -> None:
    kinds = _VADKinds()
    pool = AgentPool(
        AGENTS,
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(seconds_per_char=0.01),
        observers=[kinds],
        config=PoolConfig.from_env(runtime=Runtime(vad_runtime=setting)),
    )
    assert pool.config.runtime.uses_shared_vad
    turns = ["I would like to book a table", "thank you, goodbye"]
    script = {"turns": turns, "mode": "audio", "pause_s": 0.1}
    async with running(pool, devserver):
        batcher = models.shared_vad(setting).batcher()
        before = batcher.stats()
        jobs = [
            await devserver.dispatch(metadata={"agent": name}, simulated_call=script)
            for name in ("sales", "support", "sales")
        ]
        done = await asyncio.gather(
            *(devserver.wait_job(j.id, {"success", "failed"}, timeout=60) for j in jobs)
        )
        after = batcher.stats()
    assert [d.state.value for d in done] == ["success"] * 3, [d.to_dict() for d in done]
    for job in jobs:
        transcript = pool.transcripts[job.id]
        assert transcript.completed, transcript.error
        assert transcript.speech_detected >= len(turns), "the VAD heard every turn"
        assert transcript.replies[1].endswith("you said: thank you, goodbye")
    assert len(kinds.vads) == 3 and all(isinstance(v, SharedVAD) for v in kinds.vads)
    assert {v.runtime for v in kinds.vads} == {runs_on}
    assert len({id(v) for v in kinds.vads}) == 3, "one view per session"
    windows = after["inferences"] - before["inferences"]
    assert windows > 3 * 2 * 50, "every call's audio went through the shared batcher"
    assert windows / (after["batches"] - before["batches"]) > 1.5, "calls shared model calls"


async def test_with_the_shared_vad_off_calls_get_stock_silero(devserver: DispatchServer) -> None:
    kinds = _VADKinds()
    pool = AgentPool(
        AGENTS,
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        observers=[kinds],
        config=PoolConfig.from_env(runtime=Runtime(shared_vad=False)),
    )
    script = {"turns": ["hello"], "mode": "text", "pause_s": 0.0}
    async with running(pool, devserver):
        job = await devserver.dispatch(metadata={"agent": "sales"}, simulated_call=script)
        done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=30)
    assert done.state.value == "success"
    assert len(kinds.vads) == 1 and isinstance(kinds.vads[0], silero.VAD)
