"""A real `openrtc start` worker with every secret set never shows one, and its audit verifies.

The worker runs through start, a call with a valid tenant claim, a claim for another
room, a forged manifest, a refused and an accepted POST /drain, and its drain to exit.
Then every log line, audit record, metric and snapshot is searched for each secret, and
the audit file it left behind passes `openrtc audit verify` with the audit key.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from openrtc.cli.main import app
from openrtc.deploy.manifest import sign_manifest
from openrtc.devserver import DispatchServer
from openrtc.tenancy import sign_tenant
from openrtc.worker.lifespan import EXIT_OK
from tests.harness import wait_until

AGENT = textwrap.dedent(
    """
    from livekit.agents import Agent
    from openrtc import agent_config
    from openrtc.testing import FakeLLM, FakeSTT, FakeTTS

    @agent_config(name="desk", stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS())
    class Desk(Agent):
        def __init__(self):
            super().__init__(instructions="You are the desk.")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[DispatchServer]:
    async with DispatchServer(dispatch_deadline=2.0, offer_timeout=1.0) as s:
        yield s


async def test_no_secret_reaches_logs_audit_metrics_or_snapshot(
    server: DispatchServer, tmp_path: Path
) -> None:
    membership = secrets.token_hex(24)
    tenant_key = secrets.token_hex(24)
    audit_key = secrets.token_hex(24)
    admin_token = secrets.token_hex(24)
    every_secret = {
        "LiveKit API secret": server.api_secret,
        "admin token": admin_token,
        "membership key": membership,
        "tenant key": tenant_key,
        "audit key": audit_key,
    }
    files = {
        "membership": f"m1:{membership}\n",
        "tenant": f"t1:{tenant_key}\n",
        "audit": f"a1:{audit_key}\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.keys").write_text(text, encoding="utf-8")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "desk.py").write_text(AGENT, encoding="utf-8")
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(sign_manifest(["v1.0.0"], secret={"m1": membership}), encoding="utf-8")
    audit = tmp_path / "audit.jsonl"
    port = _free_port()
    env = {
        **os.environ,
        "LIVEKIT_URL": server.ws_url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "OPENRTC_ADMIN_TOKEN": admin_token,
        "OPENRTC_MEMBERSHIP_SECRET_FILE": str(tmp_path / "membership.keys"),
        "OPENRTC_TENANT_SECRET_FILE": str(tmp_path / "tenant.keys"),
        "OPENRTC_AUDIT_KEY_FILE": str(tmp_path / "audit.keys"),
        "OPENRTC_AUDIT_PATH": str(audit),
        "OPENRTC_MANIFEST": str(manifest),
        "OPENRTC_MANIFEST_POLL_INTERVAL": "0.1",
        "OPENRTC_HTTP_PORT": str(port),
        "OPENRTC_LOG_LEVEL": "DEBUG",
    }
    env.pop("OPENRTC_MEMBERSHIP_SECRET", None)
    env.pop("OPENRTC_TENANT_SECRET", None)
    log_path = tmp_path / "worker.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "openrtc.cli.main", "start", str(agents),
            "--deployment-version", "v1.0.0",
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until(lambda: any(w.connected for w in server.workers()), timeout=60)
        claim = sign_tenant("acme", {"t1": tenant_key}, room="room-a", ttl=60)
        call = {"turns": ["hi"], "mode": "text", "pause_s": 0.0}
        good = await server.dispatch(
            room="room-a", metadata={"tenant": "acme", "tenant_sig": claim}, simulated_call=call
        )
        bad = await server.dispatch(
            room="room-b",
            metadata={"tenant": "acme", "tenant_sig": claim},
            simulated_call=call,
            deadline=1.0,
        )
        assert (await server.wait_job(good.id, {"success", "unserved"}, 20)).state == "success"
        assert (await server.wait_job(bad.id, {"success", "unserved"}, 20)).state == "unserved"

        forged = sign_manifest(["v9.9.9"], secret={"m1": "a-guess-" + "0" * 40})
        manifest.write_text(forged, encoding="utf-8")
        await asyncio.sleep(0.5)

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            async with http.get(f"{base}/snapshot") as resp:
                snapshot = await resp.text()
                assert resp.status == 200
            wrong = {"Authorization": "Bearer not-the-token"}
            async with http.post(f"{base}/drain", headers=wrong) as resp:
                assert resp.status == 401
                refused_drain = await resp.text()
            right = {"Authorization": f"Bearer {admin_token}"}
            async with http.post(f"{base}/drain", headers=right) as resp:
                assert resp.status == 202
                accepted_drain = await resp.text()
        assert await asyncio.wait_for(proc.wait(), 60) == EXIT_OK
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    logged = log_path.read_text(encoding="utf-8", errors="replace")
    audited = audit.read_text(encoding="utf-8") + audit.with_name("audit.jsonl.head").read_text()
    assert "membership document signature is invalid" in logged
    assert "tenant_claim_mismatch" in audited
    assert "Traceback" not in logged
    seen = {
        "log": logged,
        "audit": audited,
        "metrics": metrics,
        "snapshot": snapshot,
        "drain answers": refused_drain + accepted_drain,
    }
    for where, text in seen.items():
        for name, secret in every_secret.items():
            assert secret not in text, f"the {name} appears in the {where}"

    verified = CliRunner().invoke(
        app, ["audit", "verify", str(audit), "--key-file", str(tmp_path / "audit.keys")]
    )
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith("ok: ") and "HMAC-sealed" in verified.stdout
