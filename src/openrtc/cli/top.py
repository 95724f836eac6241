"""`openrtc top`: a live view of one worker's calls, read from its /snapshot endpoint.

Rendering is a pure function of the snapshot (`render_top`), so a frame can be tested
and printed with `--once`; the live loop only fetches, renders and reads keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .snapshot_client import DEFAULT_URL, FETCH_TIMEOUT, SnapshotError, fetch_one, normalize_url

SORTS = ("duration", "agent", "tenant")
"""Row orders, in the order the `s` key cycles through them."""

STATE_STYLES = {
    "starting": "cyan",
    "accepting": "green",
    "not_member": "magenta",
    "draining": "yellow",
    "drained": "red",
    "stopped": "red",
}


def format_duration(seconds: float) -> str:
    """m:ss under an hour, h:mm:ss above: wide enough for the longest call."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_memory(memory: object) -> str:
    """The snapshot's optional `memory` block ({"rss_mb": .., ...}), or n/a without one."""
    if not isinstance(memory, Mapping) or not memory:
        return "n/a"
    parts = []
    for key, value in memory.items():
        name = str(key).removesuffix("_mb")
        if value is None:
            parts.append(f"{name} n/a")
        elif isinstance(value, int | float) and str(key).endswith("_mb"):
            parts.append(f"{name} {value:.0f} MB")
        else:
            parts.append(f"{name} {value}")
    return ", ".join(parts)


def _lag_text(lag: object) -> Text:
    if not isinstance(lag, Mapping):
        return Text("n/a")
    p50 = float(lag.get("p50", 0.0))
    p99 = float(lag.get("p99", 0.0))
    style = "red" if p99 >= 500 else "yellow" if p99 >= 100 else ""
    return Text.assemble(f"p50 {p50:.1f} ms, ", (f"p99 {p99:.1f} ms", style))


def load_text(load: object) -> Text:
    """The load the worker reports and why (the measure, the cap or the state that sets
    it), then the measured load against its threshold. Red when full, yellow when the
    measured load is close to the threshold."""
    if not isinstance(load, Mapping) or "reported" not in load:
        return Text("n/a")
    reported = float(load["reported"])
    text = f"{reported:.2f}"
    why = load.get("why")
    components = load.get("components")
    if isinstance(why, str) and why:
        text += f", why: {why}"
        if isinstance(components, Mapping) and isinstance(components.get(why), int | float):
            text += f" {float(components[why]):.2f}"
    measured, threshold = load.get("measured"), load.get("threshold")
    near = False
    if isinstance(measured, int | float) and isinstance(threshold, int | float):
        text += f"; measured {float(measured):.2f}, refuses at {threshold:g}"
        near = measured >= 0.8 * threshold
    full = reported >= 1.0 or bool(load.get("overloaded"))
    if full:
        text += "  FULL"
    return Text(text, style="bold red" if full else "yellow" if near else "")


def reload_text(status: object, now: float) -> Text:
    """Hot reload in one line: what is watched, and how the latest save went."""
    if not isinstance(status, Mapping):
        return Text("off", style="dim")
    files = status.get("files") or []
    watching = f"{len(files)} file(s)" if status.get("watching") else "not watching"
    error = status.get("last_error")
    if error:
        return Text(f"{watching}; last save rejected: {error}", style="bold red")
    reloads = [r for r in status.get("reloads") or [] if isinstance(r, Mapping)]
    if not reloads:
        return Text(f"{watching}; no reload yet")
    last = reloads[-1]
    ago = format_duration(max(0.0, now - float(last.get("at", now))))
    name = Path(str(last.get("path", "?"))).name
    return Text(f"{watching}; {name} reloaded {ago} ago, {last.get('moved', 0)} call(s) moved")


def audit_text(audit: object) -> Text:
    """Audit sinks in one line: failures by sink and reason, and the spool's backlog."""
    if not isinstance(audit, Mapping):
        return Text("n/a")
    parts: list[tuple[str, str]] = []
    sinks = audit.get("sinks")
    if isinstance(sinks, Mapping):
        for name, st in sorted(sinks.items()):
            if not isinstance(st, Mapping):
                continue
            state = f"{name} failing ({st['failing']})" if st.get("failing") else f"{name} ok"
            if "spool_bytes" in st:
                state += f", spool {int(st['spool_bytes']) / 1024:.1f} KiB"
                if st.get("spool_full"):
                    state += " FULL"
            parts.append((state, "bold red" if st.get("failing") or st.get("spool_full") else ""))
    failures = audit.get("sink_failures")
    if isinstance(failures, Mapping) and failures:
        counts = ", ".join(
            f"{sink} {reason} {n}"
            for sink, reasons in sorted(failures.items())
            if isinstance(reasons, Mapping)
            for reason, n in sorted(reasons.items())
        )
        parts.append((f"failures: {counts}", "yellow"))
    if not parts:
        return Text("file/log only, no failures", style="dim")
    text = Text()
    for i, (chunk, style) in enumerate(parts):
        if i:
            text.append("; ")
        text.append(chunk, style=style)
    return text


def _rejected_text(rejected: object) -> str:
    if not isinstance(rejected, Mapping) or not rejected:
        return "0"
    total = sum(int(n) for n in rejected.values())
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items()))
    return f"{total} ({reasons})"


def select_sessions(
    sessions: list[Mapping[str, Any]], *, sort: str, filter_text: str
) -> list[Mapping[str, Any]]:
    """Keep calls whose agent or tenant contains filter_text (any case); order by sort."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    needle = filter_text.strip().lower()
    rows = [
        s
        for s in sessions
        if not needle
        or needle in str(s.get("agent", "")).lower()
        or needle in str(s.get("tenant", "")).lower()
    ]

    def longest_first(s: Mapping[str, Any]) -> float:
        return -float(s.get("duration_s", 0.0))

    if sort == "duration":
        rows.sort(key=lambda s: (longest_first(s), str(s.get("job_id", ""))))
    else:
        rows.sort(key=lambda s: (str(s.get(sort, "")), longest_first(s)))
    return rows


def render_top(
    snapshot: Mapping[str, Any],
    *,
    sort: str,
    filter_text: str,
    prompt: str | None = None,
) -> RenderableType:
    """One frame: the worker's header, then one row per call (sorted, filtered).

    `prompt` is the filter being typed, shown in the key line while the user types.
    """
    state = str(snapshot.get("state", "?"))
    active = int(snapshot.get("active_sessions", 0))
    cap = snapshot.get("max_concurrent_sessions")
    calls = f"{active}/{cap}" if cap else f"{active} (no cap)"
    uptime = float(snapshot.get("taken_at", 0.0)) - float(snapshot.get("started_at", 0.0))

    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_column(style="bold")
    header.add_column()
    header.add_row(
        "version",
        str(snapshot.get("deployment_version", "?")),
        "state",
        Text(state, style=STATE_STYLES.get(state, "")),
    )
    header.add_row(
        "worker",
        f"{snapshot.get('worker_id') or '(not registered)'}  pid {snapshot.get('pid', '?')}",
        "up",
        format_duration(uptime),
    )
    header.add_row("calls", calls, "accepted", str(snapshot.get("accepted_total", 0)))
    header.add_row(
        "rejected",
        _rejected_text(snapshot.get("rejected_total")),
        "loop lag",
        _lag_text(snapshot.get("event_loop_lag_ms")),
    )
    header.add_row(
        "memory",
        format_memory(snapshot.get("memory")),
        "isolation",
        str(snapshot.get("isolation", "?")),
    )
    if "audit" in snapshot:
        header.add_row("audit", audit_text(snapshot["audit"]))
    if "hot_reload" in snapshot:
        header.add_row(
            "reload", reload_text(snapshot["hot_reload"], float(snapshot.get("taken_at", 0.0)))
        )

    sessions = [s for s in snapshot.get("sessions", []) if isinstance(s, Mapping)]
    rows = select_sessions(sessions, sort=sort, filter_text=filter_text)
    title = f"{len(rows)} of {len(sessions)} calls, by {sort}"
    if filter_text.strip():
        title += f", matching {filter_text.strip()!r}"
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("agent", "tenant", "room"):
        table.add_column(column, overflow="fold")
    table.add_column("duration", justify="right")
    table.add_column("status")
    for s in rows:
        table.add_row(
            str(s.get("agent", "")),
            str(s.get("tenant", "")),
            str(s.get("room", "")),
            format_duration(float(s.get("duration_s", 0.0))),
            str(s.get("status", "")),
        )

    keys = (
        Text(f"filter: {prompt}_  (Enter to apply, Esc to cancel)", style="bold")
        if prompt is not None
        else Text("s sort  f filter  q quit", style="dim")
    )
    # on a line of its own: the row is long and would widen the header's columns
    load = Text.assemble(("load", "bold"), "      ", load_text(snapshot.get("load")))
    return Group(header, load, Text(""), table, keys)


@dataclass
class TopView:
    """What the keys control: the row order, the filter, and whether to quit."""

    sort: str = "duration"
    filter_text: str = ""
    typing: str | None = None
    quit: bool = False

    def press(self, key: str) -> None:
        if self.typing is not None:
            if key in ("\r", "\n"):
                self.filter_text, self.typing = self.typing.strip(), None
            elif key == "\x1b":
                self.typing = None
            elif key in ("\x7f", "\b"):
                self.typing = self.typing[:-1]
            elif key.isprintable():
                self.typing += key
            return
        if key in ("q", "Q"):
            self.quit = True
        elif key in ("s", "S"):
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif key in ("f", "F", "/"):
            self.typing = ""

    def frame(self, snapshot: Mapping[str, Any]) -> RenderableType:
        return render_top(
            snapshot, sort=self.sort, filter_text=self.filter_text, prompt=self.typing
        )


@contextlib.contextmanager
def terminal_keys(stream: TextIO | None) -> Iterator[asyncio.Queue[str] | None]:
    """Keys from a POSIX tty in cbreak mode, queued as they arrive; None when not a tty.

    The terminal's previous mode is restored on exit, however the view ends.
    """
    try:
        import termios
        import tty
    except ImportError:
        yield None
        return
    if stream is None or not stream.isatty():
        yield None
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        for char in data.decode("utf-8", errors="ignore"):
            queue.put_nowait(char)

    tty.setcbreak(fd)
    try:
        loop.add_reader(fd, readable)
        try:
            yield queue
        finally:
            loop.remove_reader(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _next_key(keys: asyncio.Queue[str] | None, timeout: float) -> str | None:
    if keys is None:
        await asyncio.sleep(timeout)
        return None
    try:
        return await asyncio.wait_for(keys.get(), timeout)
    except TimeoutError:
        return None


async def run_live(
    url: str,
    *,
    interval: float,
    view: TopView,
    console: Console,
    keys_from: TextIO | None,
    first: Mapping[str, Any],
) -> None:
    """Refresh every `interval` seconds and on every key, until `q` (or Ctrl-C)."""
    snapshot = first
    lost: str | None = None
    with (
        terminal_keys(keys_from) as keys,
        Live(console=console, auto_refresh=False, screen=console.is_terminal) as live,
    ):
        next_fetch = time.monotonic() + interval
        while not view.quit:
            frame = view.frame(snapshot)
            if lost is not None:
                frame = Group(
                    Text(f"{lost} (retrying; last good snapshot below)", "bold red"), frame
                )
            live.update(frame, refresh=True)
            key = await _next_key(keys, next_fetch - time.monotonic())
            if key is not None:
                view.press(key)
                while keys is not None and not keys.empty():
                    view.press(keys.get_nowait())
                if time.monotonic() < next_fetch:
                    continue
            try:
                snapshot = await fetch_one(url, timeout=min(FETCH_TIMEOUT, max(interval, 0.5)))
                lost = None
            except SnapshotError as e:
                lost = str(e)
            next_fetch = time.monotonic() + interval


def top_command(
    url: Annotated[
        str,
        typer.Argument(help="The worker's operations endpoint (its --http-port)."),
    ] = DEFAULT_URL,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the raw snapshot JSON once and exit.")
    ] = False,
    sort: Annotated[
        str, typer.Option("--sort", help="Row order: duration (longest first), agent or tenant.")
    ] = "duration",
    filter_text: Annotated[
        str, typer.Option("--filter", help="Show only calls whose agent or tenant contains this.")
    ] = "",
) -> None:
    """Watch one worker live: state, capacity, load and why, loop lag and every call.

    Keys: s cycles the sort, f filters by agent or tenant (type, then Enter), q quits.
    """
    if sort not in SORTS:
        typer.secho(f"error: --sort must be one of {', '.join(SORTS)}, not {sort!r}", err=True)
        raise typer.Exit(2)
    base = normalize_url(url)
    try:
        snapshot = asyncio.run(fetch_one(base))
    except SnapshotError as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(snapshot, indent=2))
        return
    console = Console()
    view = TopView(sort=sort, filter_text=filter_text)
    if once:
        console.print(view.frame(snapshot))
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_live(
                base,
                interval=interval,
                view=view,
                console=console,
                keys_from=sys.stdin,
                first=snapshot,
            )
        )
