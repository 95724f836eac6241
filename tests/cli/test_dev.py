"""`openrtc dev` with no LIVEKIT_URL: embedded dispatch server, a worker, a call per agent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

GREETINGS = {"support": "  support: Support here, what went wrong?\n"}


def test_dev_demo_calls_every_example_agent_and_exits_clean() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "dev", "examples/agents", "--exit-after-demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "embedded dispatch server on ws://127.0.0.1:" in out
    for agent, role in (("booking", "Booking"), ("sales", "Sales"), ("support", "Support")):
        call = re.search(rf"^call AJ_\w+ to {agent}: success\n((?:  .*\n)*)", out, re.MULTILINE)
        assert call is not None, out
        said = f"  {agent}: You are {role} at Example Co. | you said:"
        greeting = GREETINGS.get(agent, "")
        assert call.group(1) == (
            f"{greeting}  caller: hello\n{said} hello\n"
            f"  caller: what can you do?\n{said} what can you do?\n"
        )


def test_devserver_prints_what_a_worker_needs_and_stops_on_sigint() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "openrtc.cli.main", "devserver", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert lines[0].startswith("export LIVEKIT_URL=ws://127.0.0.1:")
    assert lines[1] == "export LIVEKIT_API_KEY=devkey\n"
    assert lines[2].startswith("export LIVEKIT_API_SECRET=") and len(lines[2].strip()) > 40
