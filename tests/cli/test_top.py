"""`openrtc top` against real operations endpoints of real (unconnected) pools."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import termios
import time
from collections.abc import Sequence
from typing import Any

import pytest
from livekit.agents import Agent
from rich.console import Console
from typer.testing import Result

from openrtc.admission import RejectReason
from openrtc.cli.top import TopView, render_top, run_live, top_command
from openrtc.config import PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.lifecycle import WorkerState
from openrtc.ops.headroom import COMPONENTS
from openrtc.pool import AgentPool, Refuse
from openrtc.sessions import Outcome, SessionInfo
from tests.cli.endpoints import free_port_url, invoke, serving
from tests.harness import running

# (job id, agent, tenant, room, seconds since the call started)
CALLS = (
    ("j1", "support", "globex", "room-b", 30.0),
    ("j2", "sales", "acme", "room-c", 200.0),
    ("j3", "support", "acme", "room-a", 5.0),
)


async def top(*args: str) -> Result:
    return await invoke(top_command, *args, columns=160)


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def make_pool(
    version: str = "v1.0.0", calls: Sequence[tuple[str, str, str, str, float]] = CALLS
) -> AgentPool:
    pool = AgentPool(
        agents={"sales": Sales, "support": Sales},
        deployment_version=version,
        max_concurrent_sessions=10,
    )
    pool.lifecycle.move(WorkerState.ACCEPTING, reason="test")
    now = time.time()
    for job_id, agent, tenant, room, age in calls:
        info = SessionInfo(job_id, agent, room, tenant, version, "AW_test", {}, now - age)
        pool.session_started(info, session=None)
    return pool


def as_text(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(renderable)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def row_order(text: str, rooms: Sequence[str] = ("room-a", "room-b", "room-c")) -> list[str]:
    present = [r for r in rooms if r in text]
    return sorted(present, key=text.index)


async def test_once_shows_version_state_capacity_and_one_row_per_call() -> None:
    pool = make_pool()
    pool.record_rejection("j9", Refuse(RejectReason.AT_CAPACITY, "full"))
    async with serving(pool) as (server,):
        result = await top(server.url, "--once")
        assert result.exit_code == 0, result.output
        out = result.stdout
        for expected in ("v1.0.0", "accepting", "3/10", "at_capacity 1", "p99", "memory"):
            assert expected in out
        assert "load      0.00" in out  # no measure on this endpoint; nothing admitted
        assert row_order(out) == ["room-c", "room-b", "room-a"]  # longest call first
        assert "3:20" in out  # j2 has run 200 s

        pool.lifecycle.move(WorkerState.DRAINING, reason="test")
        pool.session_ended("j2", Outcome.SUCCESS, None, "test")
        result = await top(server.url, "--once")
        assert "draining" in result.stdout
        assert "room-c" not in result.stdout
        assert row_order(result.stdout) == ["room-b", "room-a"]


async def test_json_prints_the_snapshot_itself() -> None:
    pool = make_pool()
    async with serving(pool) as (server,):
        result = await top(server.url, "--json")
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        expected = pool.runtime_snapshot().to_dict()
    assert body["ops_url"] == server.url
    assert set(body["event_loop_lag_ms"]) == {"p50", "p99"}
    for volatile in ("taken_at", "sessions"):
        body.pop(volatile), expected.pop(volatile)
    for key, value in expected.items():
        assert body[key] == value, key


def test_sort_and_filter_change_the_rows() -> None:
    snapshot = make_pool().runtime_snapshot().to_dict()

    def rows(sort: str, filter_text: str = "") -> list[str]:
        return row_order(as_text(render_top(snapshot, sort=sort, filter_text=filter_text)))

    assert rows("duration") == ["room-c", "room-b", "room-a"]
    assert rows("agent") == ["room-c", "room-b", "room-a"]  # sales, then support by duration
    assert rows("tenant") == ["room-c", "room-a", "room-b"]  # acme (longest first), globex
    assert rows("duration", "acme") == ["room-c", "room-a"]
    assert rows("duration", "SUPP") == ["room-b", "room-a"]  # agent, any case
    assert rows("duration", "nobody") == []
    assert "1 of 3 calls" in as_text(render_top(snapshot, sort="agent", filter_text="glob"))
    with pytest.raises(ValueError, match="sort must be one of"):
        render_top(snapshot, sort="room", filter_text="")


def test_memory_shows_when_the_snapshot_has_it_and_na_otherwise() -> None:
    snapshot = make_pool(calls=()).runtime_snapshot().to_dict()
    snapshot.pop("memory", None)
    assert "n/a" in as_text(render_top(snapshot, sort="duration", filter_text=""))
    snapshot["memory"] = {"rss_mb": 431.6, "uss_mb": None}
    text = as_text(render_top(snapshot, sort="duration", filter_text=""))
    assert "rss 432 MB, uss n/a" in text


def test_load_row_shows_the_load_its_threshold_and_why() -> None:
    snapshot = make_pool(calls=()).runtime_snapshot().to_dict()
    components = {"loop_lag": 0.83, "vad_backlog": 0.2, "cpu": 0.31}
    snapshot["load"] = {
        "reported": 1.0,
        "measured": 0.83,
        "threshold": 0.7,
        "overloaded": True,
        "why": "loop_lag",
        "components": components,
    }
    text = as_text(render_top(snapshot, sort="duration", filter_text=""))
    expected = "load      1.00, why: loop_lag 0.83; measured 0.83, refuses at 0.7  FULL"
    assert expected in text
    snapshot["load"] = {
        **snapshot["load"],
        "reported": 0.4,
        "measured": 0.2,
        "overloaded": False,
        "why": "cap",
    }
    text = as_text(render_top(snapshot, sort="duration", filter_text=""))
    assert "0.40, why: cap; measured 0.20, refuses at 0.7" in text and "FULL" not in text
    del snapshot["load"]
    assert "load      n/a" in as_text(render_top(snapshot, sort="duration", filter_text=""))


async def test_once_shows_a_running_workers_measured_load(devserver: DispatchServer) -> None:
    pool = AgentPool(
        agents={"sales": Sales},
        config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
    )
    async with running(pool, devserver, http_port=0) as run:
        assert run.lifespan.ops is not None
        result = await top(run.lifespan.ops.url, "--once")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("load"))
    assert ", why: " in line and "refuses at 0.7" in line
    assert any(c in line for c in COMPONENTS)


def test_keys_cycle_sort_type_a_filter_and_quit() -> None:
    view = TopView()
    for key in "ss":
        view.press(key)
    assert view.sort == "tenant"
    view.press("s")
    assert view.sort == "duration"
    for key in "fsalx\x7f\r":
        view.press(key)
    assert (view.filter_text, view.typing) == ("sal", None)
    for key in "fq\x1b":  # q while typing is text; Esc cancels and keeps the old filter
        view.press(key)
    assert (view.filter_text, view.typing, view.quit) == ("sal", None, False)
    view.press("q")
    assert view.quit


async def test_unreachable_url_is_one_line_and_exit_2() -> None:
    url = free_port_url()
    result = await top(url, "--once")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach {url}: connection refused; is the worker running with --http-port?"
    ]
    assert "Traceback" not in result.output


async def test_live_view_reads_keys_from_a_tty_and_restores_it() -> None:
    master, slave = pty.openpty()
    keys_from = os.fdopen(slave, "r")
    before = termios.tcgetattr(slave)
    console = Console(file=io.StringIO(), width=160, color_system=None)
    view = TopView()
    pool = make_pool()
    seen_cbreak: list[bool] = []
    try:
        async with serving(pool) as (server,):
            first = pool.runtime_snapshot().to_dict()
            live = asyncio.create_task(
                run_live(
                    server.url,
                    interval=0.1,
                    view=view,
                    console=console,
                    keys_from=keys_from,
                    first=first,
                )
            )
            await asyncio.sleep(0.3)
            seen_cbreak.append(not termios.tcgetattr(slave)[3] & termios.ICANON)
            os.write(master, b"sfglob\r")
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.3)  # the worker is gone: the view says so and keeps going
        assert not live.done()
        os.write(master, b"q")
        await asyncio.wait_for(live, 5)
        after = termios.tcgetattr(slave)
    finally:
        keys_from.close()
        os.close(master)
    assert seen_cbreak == [True]
    assert after == before
    assert (view.sort, view.filter_text, view.quit) == ("agent", "glob", True)
    out = console.file
    assert isinstance(out, io.StringIO)
    final = out.getvalue()
    assert "1 of 3 calls, by agent, matching 'glob'" in final
    assert "cannot reach" in final and "retrying" in final


def test_reload_row_says_what_the_latest_save_did() -> None:
    from openrtc.cli.top import reload_text

    files = ["/a/sales.py", "/a/support.py"]
    status: dict[str, Any] = {"watching": True, "files": files, "last_error": None, "reloads": []}
    assert str(reload_text(status, 100.0)) == "2 file(s); no reload yet"
    status["reloads"] = [{"path": "/a/sales.py", "ok": True, "moved": 3, "at": 40.0}]
    assert (
        str(reload_text(status, 100.0)) == "2 file(s); sales.py reloaded 1:00 ago, 3 call(s) moved"
    )
    status["last_error"] = "/a/sales.py:4: syntax error"
    assert "last save rejected: /a/sales.py:4: syntax error" in str(reload_text(status, 100.0))
    assert str(reload_text(None, 0.0)) == "off"
    snapshot = {"state": "accepting", "sessions": [], "taken_at": 100.0, "hot_reload": status}
    assert "reload" in as_text(render_top(snapshot, sort="duration", filter_text=""))
    del snapshot["hot_reload"]
    assert "reload" not in as_text(render_top(snapshot, sort="duration", filter_text=""))
