"""`openrtc start` logs in livekit-agents' JSON schema off a terminal, text on one.

Real worker processes against the loopback dispatch server; lines read the way a log
shipper reads them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from livekit.agents.cli.log import JsonFormatter as LivekitJsonFormatter

from openrtc.cli.logs import resolve_format
from openrtc.devserver import DispatchServer
from tests.harness import wait_until

AGENTS = Path(__file__).resolve().parents[2] / "examples" / "agents"


async def run_worker(
    server: DispatchServer, tmp_path: Path, name: str, *, env: dict[str, str], stderr: Any
) -> None:
    """Start `openrtc start`, take one call, SIGTERM it and wait for it to exit 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openrtc.cli.main",
        "start",
        str(AGENTS),
        "--deployment-version",
        "v9.9.9",
        "--http-port",
        "0",
        "--audit-path",
        str(tmp_path / f"audit-{name}.jsonl"),
        env={
            **{k: v for k, v in os.environ.items() if not k.endswith("_LOG_LEVEL")},
            "LIVEKIT_URL": server.ws_url,
            "LIVEKIT_API_KEY": server.api_key,
            "LIVEKIT_API_SECRET": server.api_secret,
            "OPENRTC_LOG_FORMAT": "auto",
            **env,
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        await wait_until(lambda: any(w.connected for w in server.workers()), timeout=60)
        job = await server.dispatch(
            metadata={"tenant": "acme"},
            simulated_call={"turns": ["hi"], "mode": "text", "pause_s": 0.0},
        )
        await server.wait_job(job.id, {"success"}, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def livekit_keys() -> set[str]:
    """The keys livekit-agents' own JSON formatter writes for a plain line."""
    record = logging.LogRecord("livekit.agents", logging.INFO, __file__, 1, "hi", (), None)
    return set(json.loads(LivekitJsonFormatter().format(record)))


async def test_a_worker_off_a_terminal_logs_livekit_json(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        await run_worker(devserver, tmp_path, "json", env={}, stderr=out)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    wanted = livekit_keys()
    for line in lines:
        assert wanted <= set(line), sorted(wanted - set(line))
        stamp = datetime.fromisoformat(line["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)
        assert line["level"] in ("INFO", "WARNING", "ERROR")  # the default level is INFO
    assert {line["deployment_version"] for line in lines if "deployment_version" in line} == {
        "v9.9.9"
    }
    draining = [line for line in lines if line["message"].startswith("SIGTERM received")]
    assert draining and draining[0]["name"] == "openrtc.lifespan"
    in_call = [line for line in lines if "job_id" in line and "agent" in line]
    assert in_call and {(line["agent"], line["tenant"]) for line in in_call} == {
        ("booking", "acme")
    }


async def test_livekit_log_level_debug_turns_on_debug_lines(
    devserver: DispatchServer, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        await run_worker(
            devserver, tmp_path, "debug", env={"LIVEKIT_LOG_LEVEL": "debug"}, stderr=out
        )
    levels = {json.loads(line)["level"] for line in log.read_text().splitlines() if line.strip()}
    assert "DEBUG" in levels


async def test_a_worker_on_a_terminal_logs_text(devserver: DispatchServer, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    chunks: list[bytes] = []
    loop = asyncio.get_running_loop()

    def drain() -> None:
        try:
            chunks.append(os.read(leader, 65536))
        except OSError:
            loop.remove_reader(leader)

    loop.add_reader(leader, drain)
    try:
        await run_worker(devserver, tmp_path, "tty", env={}, stderr=follower)
        await asyncio.sleep(0.2)
    finally:
        loop.remove_reader(leader)
        os.close(follower)
        os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    assert any("INFO    openrtc.lifespan: SIGTERM received: draining" in line for line in lines)
    assert not any(line.lstrip().startswith("{") for line in lines)


@pytest.mark.parametrize(
    ("flag", "tty", "expected"),
    [
        ("auto", True, "text"),
        ("auto", False, "json"),
        ("json", True, "json"),
        ("text", False, "text"),
    ],
)
def test_the_flag_overrides_the_terminal_check(flag: str, tty: bool, expected: str) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert resolve_format(flag, Stream()) == expected
