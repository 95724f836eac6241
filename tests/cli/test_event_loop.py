"""`--event-loop`: the worker's calls run on the loop the operator chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from openrtc.config import Runtime
from openrtc.errors import ConfigError

OPENRTC = (sys.executable, "-m", "openrtc.cli.main")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_dev_demo_runs_every_call_on_the_chosen_loop(loop: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    proc = subprocess.run(
        [*OPENRTC, "dev", "examples/agents", "--exit-after-demo", "--event-loop", loop],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"event loop: {loop}" in proc.stderr + proc.stdout
    for agent in ("booking", "sales", "support"):
        assert f" to {agent}: success" in proc.stdout, proc.stdout


def test_an_unknown_loop_is_one_line_naming_the_flag() -> None:
    proc = subprocess.run(
        [*OPENRTC, "start", "examples/agents", "--event-loop", "trio"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--event-loop" in proc.stderr and "trio" in proc.stderr


def test_uvloop_without_the_package_names_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"--event-loop.*pip install 'openrtc\[uvloop\]'"):
        Runtime(event_loop="uvloop")
