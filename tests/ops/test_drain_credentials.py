"""POST /drain against malformed and wrong credentials, over a raw socket."""

from __future__ import annotations

import asyncio

import pytest

from openrtc import AgentPool
from openrtc.audit import AuditEvent
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM
from tests.harness import running

from ..worker.agents import SalesAgent

TOKEN = "admin-token-for-credential-tests"


async def post_drain(port: int, authorization: bytes | None) -> int:
    """Send POST /drain with these exact header bytes; return the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST /drain HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    writer.write(head + b"Connection: close\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


@pytest.mark.parametrize(
    "credential",
    [
        b"Bearer \xff\xfe\xfd",
        b"Bearer " + TOKEN.encode()[:-1] + b"\xe9",
        b"\xc3\x28",
        b"Basic " + b"x" * 5000,
    ],
)
async def test_a_malformed_credential_is_401_never_a_500(
    credential: bytes, devserver: DispatchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENRTC_ADMIN_TOKEN", TOKEN)
    pool = AgentPool(
        agents={"sales": SalesAgent},
        default_llm=FakeLLM(),
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver, http_port=0) as worker:
        assert worker.lifespan.ops is not None
        assert await post_drain(worker.lifespan.ops.port, credential) == 401
        assert pool.drain_request is None


async def test_failed_drain_attempts_are_audited_once_per_flood(
    devserver: DispatchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENRTC_ADMIN_TOKEN", TOKEN)
    events: list[AuditEvent] = []
    pool = AgentPool(
        agents={"sales": SalesAgent},
        default_llm=FakeLLM(),
        audit_sink=events.append,
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver, http_port=0) as worker:
        ops = worker.lifespan.ops
        assert ops is not None
        for i in range(40):
            guess = b"Bearer guess-%d" % i if i % 2 else None
            assert await post_drain(ops.port, guess) == 401
        assert await post_drain(ops.port, b"Bearer " + TOKEN.encode()) == 202
        assert await worker.exit_code() == 0
    refused = [e for e in events if e.event == "ops.drain_refused"]
    assert len(refused) == 1
    assert refused[0].result == "refused" and refused[0].actor == "127.0.0.1"


@pytest.mark.parametrize("credential", [b"Bearer \xff\xfe\xfd", b"Basic " + b"x" * 5000])
async def test_the_processes_parent_answers_a_malformed_credential_401(credential: bytes) -> None:
    from openrtc.ops.processes_http import ProcessesEndpoint

    drains: list[tuple[str, str]] = []
    endpoint = ProcessesEndpoint(
        lambda: [],
        host="127.0.0.1",
        port=0,
        admin_token=TOKEN,
        on_drain=lambda reason, actor: drains.append((reason, actor)),
        draining=lambda: False,
        info=dict,
    )
    await endpoint.start()
    try:
        assert await post_drain(endpoint.port, credential) == 401
        assert await post_drain(endpoint.port, b"Bearer " + TOKEN.encode()) == 202
    finally:
        await endpoint.aclose()
    assert drains == [("POST /drain", "http")]
