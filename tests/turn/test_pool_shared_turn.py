"""Audio calls through the real worker end with every turn answered, with the shared
turn detector on (the default) and off (livekit's own per-call local detector)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import typer
from livekit.agents import inference
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from openrtc import AgentPool
from openrtc.cli import pool_options as po
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.errors import ConfigError
from openrtc.sessions import SessionInfo, SessionOutcome
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from openrtc.turn import SharedTurnDetector, shared_predictor
from tests.harness import running

from ..worker.agents import SalesAgent, SupportAgent

pytestmark = pytest.mark.timeout(120)
AGENTS = {"sales": SalesAgent, "support": SupportAgent}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"
TURNS = ["I would like to book a table", "what time do you open", "thank you, goodbye"]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENRTC_SHARED_TURN_DETECTOR", raising=False)


def test_on_by_default_and_set_by_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for isolation in ("coroutine", "thread", "process"):
        assert AgentPool(AGENTS, isolation=isolation).config.runtime.shared_turn_detector
    seen: list[bool] = []
    app = typer.Typer()

    @app.command()
    @po.pool_flags
    def start(config: PoolConfig = po.DEFAULTS) -> None:
        seen.append(po.build_pool(config, EXAMPLES).config.runtime.shared_turn_detector)

    runner = CliRunner()
    assert runner.invoke(app, ["--no-shared-turn-detector"]).exit_code == 0
    assert runner.invoke(app, []).exit_code == 0
    env = {"OPENRTC_SHARED_TURN_DETECTOR": "0"}
    assert runner.invoke(app, [], env=env).exit_code == 0
    assert seen == [False, True, False]
    monkeypatch.setenv("OPENRTC_SHARED_TURN_DETECTOR", "perhaps")
    with pytest.raises(ConfigError, match="OPENRTC_SHARED_TURN_DETECTOR"):
        AgentPool(AGENTS)


class _Detectors:
    """Records the turn detector each call's session got."""

    def __init__(self) -> None:
        self.detectors: list[Any] = []

    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        self.detectors.append(session.turn_detection)

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        return None


def _predictions(metrics: str) -> dict[str, float]:
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "openrtc_turn_predictions"
        for s in family.samples
        if s.name.endswith("_total")
    }


async def _audio_calls(
    devserver: DispatchServer, *, shared: bool, isolation: str = "coroutine"
) -> tuple[list[Any], int, dict[str, float]]:
    seen = _Detectors()
    pool = AgentPool(
        AGENTS,
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(seconds_per_char=0.01),
        observers=[seen],
        isolation=isolation,
        config=PoolConfig.from_env(runtime=Runtime(shared_turn_detector=shared)),
    )
    script = {"turns": TURNS, "mode": "audio", "pause_s": 0.1}
    runs_before = shared_predictor().runs
    async with running(pool, devserver, http_port=0) as worker:
        jobs = [
            await devserver.dispatch(metadata={"agent": name}, simulated_call=script)
            for name in ("sales", "support", "sales")
        ]
        done = await asyncio.gather(
            *(devserver.wait_job(j.id, {"success", "failed"}, timeout=90) for j in jobs)
        )
        assert worker.lifespan.ops is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{worker.lifespan.ops.url}/metrics") as resp,
        ):
            metrics = await resp.text()
    assert [d.state.value for d in done] == ["success"] * 3, [d.to_dict() for d in done]
    for job in jobs:
        transcript = pool.transcripts[job.id]
        assert transcript.completed, transcript.error
        assert len(transcript.replies) >= len(TURNS), "every turn was answered"
        assert transcript.replies[-1].endswith("you said: thank you, goodbye")
    return seen.detectors, shared_predictor().runs - runs_before, _predictions(metrics)


@pytest.mark.parametrize("isolation", ["coroutine", "thread"])
async def test_audio_calls_complete_with_the_shared_turn_detector(
    devserver: DispatchServer, isolation: str
) -> None:
    """Under thread isolation each call has its own event loop; one thread serves them all."""
    detectors, runs, counted = await _audio_calls(devserver, shared=True, isolation=isolation)
    assert len(detectors) == 3 and all(isinstance(d, SharedTurnDetector) for d in detectors)
    assert len({id(d) for d in detectors}) == 1, "one detector for the whole process"
    assert runs >= 3 * len(TURNS), "every turn's end was predicted by the shared thread"
    assert set(counted) == {"run", "skipped", "stale", "dropped", "failed"}
    assert counted["run"] >= runs
    assert counted["failed"] == 0


async def test_with_the_shared_turn_detector_off_calls_get_livekits_own(
    devserver: DispatchServer,
) -> None:
    detectors, runs, _ = await _audio_calls(devserver, shared=False)
    assert len(detectors) == 3
    assert all(
        isinstance(d, inference.TurnDetector) and not isinstance(d, SharedTurnDetector)
        for d in detectors
    )
    assert runs == 0, "no call used the shared thread"
