"""console, download-files and connect, as a user runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from openrtc.devserver import DispatchServer


def openrtc(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_console_talks_to_the_chosen_agent() -> None:
    done = openrtc(
        "console", "examples/agents", "--agent", "support", stdin="my wifi\n/quit\nignored\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "support> Support here, what went wrong?"
    assert lines[1] == "support> You are Support at Example Co. | you said: my wifi"
    assert len(lines) == 2


def test_console_names_the_agents_when_one_is_unknown() -> None:
    done = openrtc("console", "examples/agents", "--agent", "nobody")
    assert done.returncode == 2
    assert "no agent named 'nobody'; this directory has booking, sales, support" in done.stderr
    assert "Traceback" not in done.stderr


def test_download_files_loads_the_shared_models_offline() -> None:
    done = openrtc("download-files", "examples/agents")
    assert done.returncode == 0, done.stderr
    assert "livekit.plugins.silero" in done.stdout
    assert "shared models ready: VAD and TurnDetector" in done.stdout


async def test_connect_without_a_media_server_fails_in_one_line() -> None:
    async with DispatchServer() as server:
        env = {
            **os.environ,
            "LIVEKIT_URL": server.ws_url,
            "LIVEKIT_API_KEY": server.api_key,
            "LIVEKIT_API_SECRET": server.api_secret,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc.cli.main",
            "connect",
            "examples/agents",
            "--room",
            "demo-room",
            "--agent",
            "sales",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 1
    assert "joining room demo-room as sales" in out.decode()
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("error: the call in room demo-room failed; is there a LiveKit media")
