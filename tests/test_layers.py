"""The layers `lint-imports` cannot see: lookups by name, and the program `pool.run()` runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import openrtc
from openrtc import pool as pool_module

SRC = Path(openrtc.__file__).parent
NAMES_THE_CLI = re.compile(r"""(import_module|__import__)\(\s*["']openrtc\.cli""")


def test_no_module_below_the_command_line_looks_it_up_by_name() -> None:
    below = [
        p
        for p in SRC.rglob("*.py")
        if p.parent != SRC / "cli" and SRC / "cli" not in p.parents and p != SRC / "__init__.py"
    ]
    assert len(below) > 50, "the scan found too few modules to mean anything"
    offenders = [str(p.relative_to(SRC)) for p in below if NAMES_THE_CLI.search(p.read_text())]
    assert offenders == []


def test_the_scan_would_catch_a_lookup() -> None:
    assert NAMES_THE_CLI.search('importlib.import_module("openrtc.cli.pool_app")')


def test_pool_run_hands_the_pool_and_its_arguments_to_the_installed_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[object, list[str] | None]] = []
    monkeypatch.setattr(pool_module, "_program", lambda p, argv: calls.append((p, argv)))
    pool = openrtc.AgentPool()
    pool.run(["start", "--help"])
    assert calls == [(pool, ["start", "--help"])]


def test_importing_openrtc_installs_the_command_line() -> None:
    assert pool_module._program is openrtc._run_program
