"""`openrtc dev` watches agent files by default; `--no-watch` turns hot reload off."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

AGENT = """from livekit.agents import Agent

from openrtc import agent_config
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS


@agent_config(stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS())
class Alpha(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="{instructions}")
"""


def start_dev(agents: Path, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "openrtc.cli.main", "dev", str(agents), *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_for_text(log: Path, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the dev output:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30)


def test_dev_reloads_a_saved_agent_file_and_reports_a_broken_one(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    alpha = agents / "alpha.py"
    alpha.write_text(AGENT.format(instructions="You are Alpha v1."))
    log = tmp_path / "dev.log"
    proc = start_dev(agents, log, "--watch-path", str(tmp_path / "agents"), "--http-port", "0")
    try:
        out = wait_for_text(log, "serving: alpha")
        assert "hot reload watching 1 agent file(s) and 1 extra path(s)" in out
        ops = re.search(r"operations endpoint on (\S+)", out)
        assert ops is not None, out
        assert "no reload yet" in top_once(ops.group(1))
        alpha.write_text(AGENT.format(instructions="You are Alpha v2.").replace("):", ")", 1))
        wait_for_text(log, "hot reload rejected, the running agent stays")
        rejected = top_once(ops.group(1))
        alpha.write_text(AGENT.format(instructions="You are Alpha v2."))
        out = wait_for_text(log, "agent(s) alpha swapped")
        reloaded = top_once(ops.group(1))
    finally:
        code = stop(proc)
    assert code == 0, out[-2000:]
    assert f"{alpha.resolve()}:8: syntax error" in out
    assert "last save rejected" in rejected and ":8: syntax error" in rejected
    assert "alpha.py reloaded" in reloaded and "0 call(s) moved" in reloaded


def top_once(url: str) -> str:
    """What `openrtc top --once` shows, on one line per row of a wide terminal."""
    done = subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "top", url, "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_no_watch_turns_hot_reload_off(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "alpha.py").write_text(AGENT.format(instructions="You are Alpha v1."))
    log = tmp_path / "dev.log"
    proc = start_dev(agents, log, "--no-watch")
    try:
        out = wait_for_text(log, "serving: alpha")
    finally:
        assert stop(proc) == 0
    assert "hot reload" not in out
