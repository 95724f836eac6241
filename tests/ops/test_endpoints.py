"""The operations endpoint of a running worker across accepting, not-a-member and draining."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit.agents import Agent
from prometheus_client.parser import text_string_to_metric_families

from openrtc import AgentPool
from openrtc.config import Deployment, Limits, PoolConfig, Runtime, Tenancy
from openrtc.deploy.manifest import sign_manifest
from openrtc.devserver import DispatchServer
from openrtc.ops.http import HANG_AFTER_S
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

SECRET = "ops-test-secret"
TOKEN = "admin-token-for-tests"


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def post(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.post(url, headers=headers) as resp:
        return resp.status


def samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(sign_manifest(["v1.0.0"], secret=SECRET, issued_at=1.0e9 + 1))
    return path


async def test_endpoints_across_the_lifecycle(
    devserver: DispatchServer, manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENRTC_ADMIN_TOKEN", TOKEN)
    pool = AgentPool(
        agents={"sales": Sales},
        deployment_version="v1.0.0",
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(),
        config=PoolConfig.from_env(
            deployment=Deployment(
                manifest=manifest, membership_secrets=[SECRET], manifest_poll_interval=0.1
            ),
            limits=Limits(per_tenant=1),
            tenancy=Tenancy(settings={"acme": {}}),  # configured tenants are metric labels
            runtime=Runtime(prewarm_models=False),
        ),
    )
    async with running(pool, devserver, http_port=0) as worker:
        assert worker.lifespan.ops is not None
        base = worker.lifespan.ops.url
        assert base.startswith("http://127.0.0.1:")
        job = await devserver.dispatch(
            metadata={"tenant": "acme"},
            simulated_call={"turns": ["hi"], "mode": "text", "hold_s": 30},
        )
        await wait_until(lambda: pool.runtime_snapshot().active_sessions == 1)

        # accepting
        assert (await get(f"{base}/healthz"))[0] == 200
        assert (await get(f"{base}/readyz"))[0] == 200
        status, body = await get(f"{base}/snapshot")
        snap = json.loads(body)
        assert (status, snap["state"], snap["member"]) == (200, "accepting", True)
        assert snap["sessions_by_tenant"] == {"acme": 1}
        assert snap["sessions"][0]["job_id"] == job.id
        _, text = await get(f"{base}/metrics")
        m = samples(text)
        active = [s for s in m["openrtc_active_sessions"] if s.labels["tenant"] == "acme"]
        assert active[0].value == 1 and active[0].labels["version"] == "v1.0.0"
        assert [s.value for s in m["openrtc_draining"]] == [0.0]
        for accept, wanted in (
            ("", "text/plain; version="),
            ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text"),
        ):
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{base}/metrics", headers={"Accept": accept}) as resp,
            ):
                assert resp.headers["Content-Type"].startswith(wanted)
        over_cap = await devserver.dispatch(
            metadata={"tenant": "acme"}, simulated_call={"turns": ["hi"], "mode": "text"}
        )
        await devserver.wait_job(over_cap.id, {"unserved"}, timeout=10)

        # not a member
        manifest.write_text(sign_manifest(["v2.0.0"], secret=SECRET, issued_at=1.0e9 + 2))
        await wait_until(lambda: pool.state.value == "not_member", timeout=5)
        status, body = await get(f"{base}/readyz")
        assert status == 503 and "manifest" in json.loads(body)["reason"]
        assert (await get(f"{base}/healthz"))[0] == 200
        _, text = await get(f"{base}/metrics")
        assert [s.value for s in samples(text)["openrtc_membership"]] == [0.0]
        snap = json.loads((await get(f"{base}/snapshot"))[1])
        assert (snap["state"], snap["member"], snap["active_sessions"]) == ("not_member", False, 1)

        # draining, through POST /drain
        assert await post(f"{base}/drain", None) == 401
        assert await post(f"{base}/drain", "wrong-token") == 401
        assert await post(f"{base}/drain", TOKEN) == 202
        await wait_until(lambda: pool.state.value == "draining", timeout=5)
        status, body = await get(f"{base}/readyz")
        assert (status, json.loads(body)["reason"]) == (503, "draining")
        _, text = await get(f"{base}/metrics")
        m = samples(text)
        assert [s.value for s in m["openrtc_draining"]] == [1.0]
        state = {s.labels["state"]: s.value for s in m["openrtc_worker_state"]}
        assert state["draining"] == 1.0 and state["accepting"] == 0.0
        assert (await get(f"{base}/healthz"))[0] == 200
        snap = json.loads((await get(f"{base}/snapshot"))[1])
        assert (snap["state"], snap["draining"], snap["active_sessions"]) == ("draining", True, 1)
        await devserver.end_call(job.id)
        assert await worker.exit_code() == 0
        await wait_until(lambda: pool.runtime_snapshot().outcomes_total.get("success") == 1)

    # everything the worker did shows in its metrics, read the way Prometheus reads them
    m = samples(worker.lifespan.ops.pool_metrics.render().decode())
    ended = [s for s in m["openrtc_session_duration_seconds"] if s.name.endswith("_count")]
    assert [(s.labels["agent"], s.labels["outcome"], s.value) for s in ended] == [
        ("sales", "success", 1.0)
    ]
    rejected = {s.labels["reason"]: s.value for s in m["openrtc_sessions_rejected"]}
    assert rejected["tenant_at_capacity"] >= 1
    lag = {s.name: s for s in m["openrtc_event_loop_lag_seconds"]}
    assert "quantile" not in lag["openrtc_event_loop_lag_seconds_count"].labels
    assert lag["openrtc_event_loop_lag_seconds_count"].value > 0
    # the version sits on build_info and the three series a deploy dashboard splits by it
    (build,) = m["openrtc_build_info"]
    assert (build.labels["version"], build.value) == ("v1.0.0", 1.0)
    assert [s.labels for s in m["openrtc_sessions_accepted"] if s.name.endswith("_total")] == [{}]
    assert all("version" not in s.labels for s in m["openrtc_worker_state"])
    assert {s.labels["version"] for s in m["openrtc_sessions_ended"]} == {"v1.0.0"}
    (cpu,) = [s for s in m["process_cpu_seconds"] if s.name == "process_cpu_seconds_total"]
    assert cpu.value > 0
    assert m["process_resident_memory_bytes"][0].value > 0
    assert [s.value for s in m["openrtc_audit_sink_failures"]] == [0.0]


async def test_drain_over_http_is_off_without_a_token(
    devserver: DispatchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENRTC_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("OPENRTC_ADMIN_TOKEN_FILE", raising=False)
    pool = AgentPool(
        agents={"sales": Sales},
        default_llm=FakeLLM(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver, http_port=0) as worker:
        assert worker.lifespan.ops is not None
        assert await post(f"{worker.lifespan.ops.url}/drain", "anything") == 403
        assert pool.state.value == "accepting"


async def test_the_admin_token_can_come_from_a_file(
    devserver: DispatchServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("OPENRTC_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("OPENRTC_ADMIN_TOKEN_FILE", str(token_file))
    pool = AgentPool(
        agents={"sales": Sales},
        default_llm=FakeLLM(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver, http_port=0) as worker:
        assert worker.lifespan.ops is not None
        assert await post(f"{worker.lifespan.ops.url}/drain", "wrong") == 401
        assert await post(f"{worker.lifespan.ops.url}/drain", TOKEN) == 202
        assert await worker.exit_code() == 0


async def test_healthz_stays_up_while_busy_and_fails_when_the_loop_stops_ticking(
    devserver: DispatchServer,
) -> None:
    pool = AgentPool(
        agents={"sales": Sales},
        default_llm=FakeLLM(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver, http_port=0) as worker:
        ops = worker.lifespan.ops
        assert ops is not None
        assert (await get(f"{ops.url}/healthz"))[0] == 200
        # busy: every recent tick ran far later than the hang limit; a worker this loaded
        # still has live calls, and restarting it would cut them
        ops.lag.samples.extend([HANG_AFTER_S * 3] * ops.lag.samples.maxlen)  # type: ignore[operator]
        status, body = await get(f"{ops.url}/healthz")
        assert (status, json.loads(body)["loop_lag_p99_s"]) == (200, HANG_AFTER_S * 3)

        # hung: the loop's ticker has not run for longer than the limit
        ops.hang_after = 0.3
        await ops.lag.aclose()
        await asyncio.sleep(0.6)
        status, body = await get(f"{ops.url}/healthz")
        assert status == 503 and "has not ticked" in json.loads(body)["reason"]
        ops.lag.start()
        await asyncio.sleep(0.25)
        assert (await get(f"{ops.url}/healthz"))[0] == 200
        pool.begin_drain(reason="test")


async def test_a_blocked_loop_fails_the_probe_by_its_timeout(devserver: DispatchServer) -> None:
    """The kubelet's timeoutSeconds is what catches a loop blocked right now."""
    pool = AgentPool(
        agents={"sales": Sales},
        default_llm=FakeLLM(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver, http_port=0) as worker:
        ops = worker.lifespan.ops
        assert ops is not None

        def probe() -> int | str:
            try:
                with urllib.request.urlopen(f"{ops.url}/healthz", timeout=0.5) as resp:
                    return int(resp.status)
            except TimeoutError:
                return "timeout"

        probing = asyncio.get_running_loop().run_in_executor(None, probe)
        time.sleep(1.5)  # the loop is blocked: nothing on it runs, the probe included
        assert await probing == "timeout"
        assert (await get(f"{ops.url}/healthz"))[0] == 200
        pool.begin_drain(reason="test")
