"""The follower over the wire: expiry fails closed and resumes; the deploy is audited."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from typer.testing import CliRunner, Result

from openrtc.deploy.manifest import sign_manifest
from openrtc.deploy.rehearsal.workers import free_port
from openrtc.devserver import DispatchServer
from tests.deploy.test_membership_enforced import SECRET, member_pool, publish, readyz
from tests.harness import running, wait_until

CALL = {"turns": ["hi"], "mode": "text", "pause_s": 0.0}


async def test_an_expired_manifest_stops_new_calls_until_a_fresh_one(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(sign_manifest(["v1.0.0"], secret=SECRET, ttl_seconds=2.0))
    events: list[dict[str, object]] = []
    pool = member_pool(manifest, events)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with running(pool, devserver, http_port=port):
        assert (await readyz(url))[0] == 200
        await wait_until(lambda: pool.membership_reason == "manifest_expired", timeout=10)
        status, body = await readyz(url)
        assert (status, body["reason"]) == (503, "manifest_expired")
        refused = await devserver.dispatch(simulated_call=CALL, deadline=1.0)
        assert (await devserver.wait_job(refused.id, {"unserved", "success"}, 10)).state == (
            "unserved"
        )
        assert any(e["event"] == "membership.manifest_expired" for e in events)
        publish(manifest, ["v1.0.0"], issued_at=time.time())
        await wait_until(lambda: pool.member is True, timeout=10)
        assert (await readyz(url))[0] == 200
        served = await devserver.dispatch(simulated_call=CALL)
        done = await devserver.wait_job(served.id, {"success", "failed"}, timeout=20)
        assert done.state.value == "success"


async def test_a_worker_started_on_an_expired_manifest_says_so(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        sign_manifest(["v1.0.0"], secret=SECRET, issued_at=time.time() - 60, ttl_seconds=30)
    )
    pool = member_pool(manifest, [])
    port = free_port()
    async with running(pool, devserver, http_port=port):
        status, body = await readyz(f"http://127.0.0.1:{port}")
        assert (status, body["reason"]) == (503, "manifest_expired")


async def test_workers_record_the_cutover_and_the_rollback(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    publish(manifest, ["v1.0.0"], issued_at=time.time() - 3)
    events: list[dict[str, object]] = []
    pool = member_pool(manifest, events)
    async with running(pool, devserver):
        publish(manifest, ["v2.0.0"], issued_at=time.time() - 2)
        await wait_until(lambda: pool.member is False, timeout=10)
        publish(manifest, ["v2.0.0", "v1.0.0"], issued_at=time.time() - 1)
        await wait_until(lambda: pool.member is True, timeout=10)
    deploy = [e for e in events if str(e["event"]).startswith("deployment.c")]
    deploy += [e for e in events if e["event"] == "deployment.rolled_back"]
    assert [(e["event"], e["previous_active"], e["active"]) for e in deploy] == [
        ("deployment.cutover", ["v1.0.0"], ["v2.0.0"]),
        ("deployment.rolled_back", ["v2.0.0"], ["v2.0.0", "v1.0.0"]),
    ]


def rollback(*args: str) -> Result:
    from openrtc.cli.main import app

    env: dict[str, str | None] = {
        "OPENRTC_MEMBERSHIP_SECRET": None,
        "OPENRTC_MEMBERSHIP_SECRET_FILE": None,
    }
    return CliRunner().invoke(app, ["manifest", "rollback", *args], env=env)


async def test_manifest_rollback_puts_the_previous_version_back_on_a_live_worker(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    publish(manifest, ["v1.0.0"], issued_at=time.time() - 2)
    events: list[dict[str, object]] = []
    pool = member_pool(manifest, events)
    async with running(pool, devserver):
        publish(manifest, ["v2.0.0"], issued_at=time.time() - 1)
        await wait_until(lambda: pool.member is False, timeout=10)
        args = ("--to", "v1.0.0", "--manifest", str(manifest), "--secret-file", str(secret_file))
        result = await asyncio.to_thread(rollback, *args)
        assert result.exit_code == 0, result.output
        assert "rolled back: active v2.0.0 -> v1.0.0" in result.stderr
        await wait_until(lambda: pool.member is True, timeout=10)
        served = await devserver.dispatch(simulated_call=CALL)
        done = await devserver.wait_job(served.id, {"success", "failed"}, timeout=20)
        assert done.state.value == "success"
    back = [e for e in events if e["event"] == "deployment.rolled_back"]
    assert [(e["previous_active"], e["active"]) for e in back] == [(["v2.0.0"], ["v1.0.0"])]


def test_manifest_rollback_refuses_a_manifest_it_cannot_verify(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(sign_manifest(["v2.0.0"], secret="someone-else"))
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    before = manifest.read_text()
    result = rollback(
        "--to", "v1.0.0", "--manifest", str(manifest), "--secret-file", str(secret_file)
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --manifest {manifest} refused:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert manifest.read_text() == before
