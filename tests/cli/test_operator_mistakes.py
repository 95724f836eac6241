"""Every operator mistake at start: one line naming the flag or variable, exit 2, no traceback.

Each case runs a real `openrtc start` process.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from openrtc.devserver import DispatchServer
from tests.harness import agents_folder, wait_until


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    return agents_folder(tmp_path, "plain")


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process already listens on (as a second worker on the host would)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENRTC_", "LIVEKIT_"))}
    env.update(LIVEKIT_URL="ws://127.0.0.1:9", LIVEKIT_API_KEY="devkey", LIVEKIT_API_SECRET="s")
    env.update(extra)
    return env


def start(agents_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "start", str(agents_dir), *args],
        env=env or base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def test_an_http_port_in_use_names_the_flag_and_suggests_port_0(
    agents_dir: Path, held_port: int
) -> None:
    code, out = start(agents_dir, "--http-port", str(held_port))
    assert code == 2, out
    line = one_error_line(out)
    assert "--http-port" in line and str(held_port) in line and "--http-port 0" in line


def test_an_http_port_in_use_from_the_variable_names_it(agents_dir: Path, held_port: int) -> None:
    code, out = start(agents_dir, env=base_env(OPENRTC_HTTP_PORT=str(held_port)))
    assert code == 2, out
    assert "OPENRTC_HTTP_PORT" in one_error_line(out)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--http-port", "99999"), "--http-port"),
        (("--drain-timeout", "inf"), "--drain-timeout"),
        (("--dispatch-retry-budget", "inf"), "--dispatch-retry-budget"),
        (("--audio-input-rate", "1600"), "--audio-input-rate"),
    ],
)
def test_an_impossible_number_names_its_flag(
    agents_dir: Path, args: tuple[str, ...], named: str
) -> None:
    code, out = start(agents_dir, *args)
    assert code == 2, out
    line = one_error_line(out)
    assert named in line and args[-1] in line


def test_an_audit_path_that_is_a_directory(agents_dir: Path, tmp_path: Path) -> None:
    code, out = start(agents_dir, "--audit-path", str(tmp_path))
    assert code == 2, out
    line = one_error_line(out)
    assert "--audit-path" in line and "is a directory" in line


def test_an_audit_path_in_a_missing_directory(agents_dir: Path, tmp_path: Path) -> None:
    code, out = start(agents_dir, "--audit-path", str(tmp_path / "nope" / "audit.jsonl"))
    assert code == 2, out
    line = one_error_line(out)
    assert "--audit-path" in line and "does not exist" in line


def test_a_damaged_audit_file_points_at_the_cli_not_at_python(
    agents_dir: Path, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_text('{"seq": 1, "garbled\n')
    code, out = start(agents_dir, "--audit-path", str(audit))
    assert code == 2, out
    line = one_error_line(out)
    assert "--audit-path" in line and "openrtc audit verify" in line
    assert "verify_chain()" not in line


def test_a_manifest_without_a_membership_secret(agents_dir: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    code, out = start(agents_dir, "--manifest", str(manifest), "--http-port", "0")
    assert code == 2, out
    assert "OPENRTC_MEMBERSHIP_SECRET" in one_error_line(out)


def test_a_missing_admin_token_file(agents_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "token"
    env = base_env(OPENRTC_ADMIN_TOKEN_FILE=str(missing))
    code, out = start(agents_dir, "--http-port", "0", env=env)
    assert code == 2, out
    line = one_error_line(out)
    assert "OPENRTC_ADMIN_TOKEN_FILE" in line and str(missing) in line


async def test_http_port_0_picks_a_free_port_and_says_which(
    agents_dir: Path, tmp_path: Path, devserver: DispatchServer
) -> None:
    env = base_env(
        LIVEKIT_URL=devserver.ws_url,
        LIVEKIT_API_KEY=devserver.api_key,
        LIVEKIT_API_SECRET=devserver.api_secret,
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc.cli.main",
            "start",
            str(agents_dir),
            "--http-port",
            "0",
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        pattern = re.compile(r"operations endpoint on (http://127\.0\.0\.1:(\d+))")
        await wait_until(lambda: pattern.search(log.read_text()) is not None, timeout=60)
        match = pattern.search(log.read_text())
        assert match is not None and int(match.group(2)) != 0
        url = match.group(1)
        async with aiohttp.ClientSession() as http, http.get(f"{url}/snapshot") as resp:
            assert resp.status == 200
            assert (await resp.json())["ops_url"] == url
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
