"""`openrtc fleet`: many workers in one table, and a wait for one version to drain.

During a blue-green deploy the question is "which versions hold which calls, and when
has the old one finished?"; this answers it from each worker's /snapshot, fetched
concurrently. A worker counts as drained only on evidence that its calls ended: its
last answer said `drained` (a watched worker answers once more before it exits) or
showed no live calls. One that stops answering with live calls at last sight has
vanished: it is named with its count, and the wait exits non-zero.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .snapshot_client import FETCH_TIMEOUT, SnapshotError, fetch_many, normalize_url
from .top import STATE_STYLES

NOT_ACCEPTING = ("starting", "not_member", "draining", "drained", "stopped")


@dataclass(frozen=True)
class WorkerRow:
    """One URL's answer: a snapshot, or the error that stood in for it."""

    url: str
    snapshot: Mapping[str, Any] | None = None
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.snapshot is not None

    @property
    def version(self) -> str | None:
        return None if self.snapshot is None else str(self.snapshot.get("deployment_version"))

    @property
    def state(self) -> str:
        return "unreachable" if self.snapshot is None else str(self.snapshot.get("state", "?"))

    @property
    def active(self) -> int:
        return 0 if self.snapshot is None else int(self.snapshot.get("active_sessions", 0))

    def to_dict(self) -> dict[str, Any]:
        s = self.snapshot or {}
        return {
            "url": self.url,
            "reachable": self.reachable,
            "error": self.error,
            "deployment_version": self.version,
            "state": self.state,
            "member": s.get("member"),
            "draining": s.get("draining"),
            "active_sessions": s.get("active_sessions"),
            "max_concurrent_sessions": s.get("max_concurrent_sessions"),
            "accepted_total": s.get("accepted_total"),
            "worker_id": s.get("worker_id"),
            "snapshot": self.snapshot,
        }


async def poll(urls: Sequence[str], *, timeout: float = FETCH_TIMEOUT) -> list[WorkerRow]:
    """Every URL's snapshot at once, in the order given."""
    results = await fetch_many(urls, timeout=timeout)
    return [
        WorkerRow(url, error=r.reason) if isinstance(r, SnapshotError) else WorkerRow(url, r)
        for url, r in zip(urls, results, strict=True)
    ]


def versions_summary(rows: Sequence[WorkerRow]) -> dict[str, dict[str, Any]]:
    """Per version: workers, live calls, and how many workers sit in each state."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.version is None:
            continue
        entry = out.setdefault(row.version, {"workers": 0, "calls": 0, "states": {}})
        entry["workers"] += 1
        entry["calls"] += row.active
        entry["states"][row.state] = entry["states"].get(row.state, 0) + 1
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def distribution_line(rows: Sequence[WorkerRow]) -> str:
    """E.g. "v1.0.0: 2 workers (1 draining), 3 calls | v2.0.0: 2 workers, 5 calls"."""
    parts = []
    for version, entry in versions_summary(rows).items():
        aside = ", ".join(
            f"{entry['states'][state]} {state}"
            for state in NOT_ACCEPTING
            if entry["states"].get(state)
        )
        workers = _plural(entry["workers"], "worker") + (f" ({aside})" if aside else "")
        parts.append(f"{version}: {workers}, {_plural(entry['calls'], 'call')}")
    down = sum(1 for row in rows if not row.reachable)
    if down:
        parts.append(f"unreachable: {down}")
    return " | ".join(parts) if parts else "no workers"


def _member(value: object) -> str:
    return {True: "yes", False: "no"}.get(value, "-") if isinstance(value, bool) else "-"


def render_fleet(rows: Sequence[WorkerRow]) -> RenderableType:
    """The table of workers, then the version distribution line."""
    table = Table("url", "version", "state", "member", "calls", "cap", "accepted", "worker / error")
    for column in table.columns[4:7]:
        column.justify = "right"
    for row in rows:
        s = row.snapshot
        if s is None:
            table.add_row(
                row.url,
                "-",
                Text("unreachable", "red"),
                "-",
                "-",
                "-",
                "-",
                Text(row.error or "", "red"),
            )
            continue
        cap = s.get("max_concurrent_sessions")
        table.add_row(
            row.url,
            row.version,
            Text(row.state, STATE_STYLES.get(row.state, "")),
            _member(s.get("member")),
            str(row.active),
            str(cap) if cap else "-",
            str(s.get("accepted_total", 0)),
            str(s.get("worker_id") or "(not registered)"),
        )
    return Group(table, Text(distribution_line(rows)))


GONE_AFTER = 3
"""Polls in a row a worker holding calls must miss before it counts as gone (not a blip)."""

EXIT_VANISHED = 3
"""--wait-drained: a worker of the version disappeared with live calls at last sight."""


@dataclass
class DrainWatch:
    """Tracks one version across polls: who still holds calls, who stopped answering.

    A worker that stops answering is judged by its last answer: `drained`, or no live
    calls, is evidence its calls ended (counted drained); live calls at last sight are
    not, and after `GONE_AFTER` missed polls in a row (a blip answers on the next poll)
    it counts as vanished with them.
    """

    version: str
    seen: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    vanished: dict[str, int] = field(default_factory=dict)
    holding: dict[str, int] = field(default_factory=dict)
    accepting: list[str] = field(default_factory=list)
    misses: dict[str, int] = field(default_factory=dict)
    last_state: dict[str, str] = field(default_factory=dict)

    def update(self, rows: Sequence[WorkerRow]) -> list[str]:
        """Take one poll; return the lines worth printing about what changed."""
        news: list[str] = []
        holding: dict[str, int] = {}
        accepting: list[str] = []
        for row in rows:
            if row.version == self.version:
                self.seen.add(row.url)
                self.gone.discard(row.url)
                self.vanished.pop(row.url, None)
                self.misses.pop(row.url, None)
                self.last_state[row.url] = row.state
                if row.active:
                    holding[row.url] = row.active
                if row.state == "accepting":
                    accepting.append(row.url)
            elif row.url in self.seen and not row.reachable and row.url not in self.gone:
                news += self._missed(row, holding)
        if holding != self.holding or news:
            news.append(self.status_line(holding))
        self.holding, self.accepting = holding, accepting
        return news

    def _missed(self, row: WorkerRow, holding: dict[str, int]) -> list[str]:
        cause = (row.error or "").split(";")[0]
        misses = self.misses[row.url] = self.misses.get(row.url, 0) + 1
        held = self.holding.get(row.url, 0)
        if held and misses < GONE_AFTER:
            holding[row.url] = held
            return [f"{row.url} did not answer ({cause}); poll {misses} of {GONE_AFTER}"]
        self.gone.add(row.url)
        if held and self.last_state.get(row.url) not in ("drained", "stopped"):
            self.vanished[row.url] = held
            calls = _plural(held, "live call")
            return [f"{row.url} vanished ({cause}) with {calls} at last sight"]
        return [f"{row.url} stopped answering ({cause}) after it drained"]

    def status_line(self, holding: Mapping[str, int]) -> str:
        if not holding:
            return f"{self.version}: no live calls"
        where = ", ".join(f"{url} ({n})" for url, n in holding.items())
        calls = _plural(sum(holding.values()), "call")
        return f"{self.version}: {calls} live on {_plural(len(holding), 'worker')}: {where}"

    @property
    def drained(self) -> bool:
        return not self.holding and not self.vanished

    @property
    def settled(self) -> bool:
        """Nothing more to wait for: drained, or only vanished workers held calls."""
        return not self.holding


async def wait_drained(
    urls: Sequence[str],
    version: str,
    *,
    interval: float,
    timeout: float,
    progress: Callable[[str], None],
    fetch_timeout: float = FETCH_TIMEOUT,
) -> tuple[bool, DrainWatch, list[WorkerRow]]:
    """Poll until no answering worker of `version` holds a call, or `timeout` passes."""
    watch = DrainWatch(version)
    deadline = time.monotonic() + timeout
    while True:
        rows = await poll(urls, timeout=min(fetch_timeout, max(interval, 0.5)))
        for line in watch.update(rows):
            progress(line)
        if watch.settled:
            return watch.drained, watch, rows
        left = deadline - time.monotonic()
        if left <= 0:
            return False, watch, rows
        await asyncio.sleep(min(interval, left))


def _err(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)


def _wait(urls: list[str], version: str, interval: float, timeout: float, as_json: bool) -> int:
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    done, watch, rows = asyncio.run(
        wait_drained(urls, version, interval=interval, timeout=timeout, progress=progress)
    )
    if not any(row.reachable for row in rows) and not watch.seen:
        _err(f"none of the {len(urls)} workers answered; check the URLs and --http-port")
        return 2
    took = time.monotonic() - started
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "version": version,
                    "drained": done,
                    "seconds": round(took, 2),
                    "workers_seen": sorted(watch.seen),
                    "stopped_answering": sorted(watch.gone),
                    "vanished": watch.vanished,
                    "holding_calls": watch.holding,
                    "still_accepting": watch.accepting,
                }
            )
        )
    if watch.vanished:
        where = ", ".join(f"{url} ({n})" for url, n in watch.vanished.items())
        calls = _plural(sum(watch.vanished.values()), "call")
        _err(f"{version}: workers vanished with {calls} live at last sight: {where}")
        return EXIT_VANISHED
    if not done:
        where = ", ".join(f"{url} ({n})" for url, n in watch.holding.items())
        calls = _plural(sum(watch.holding.values()), "call")
        _err(f"timed out after {timeout:g}s: {version} still has {calls} live on {where}")
        return 1
    if not as_json:
        if not watch.seen:
            seen = sorted({row.version for row in rows if row.version})
            typer.echo(
                f"no worker answers as {version} (seen: {', '.join(seen)}); nothing to wait for"
            )
        else:
            gone = f" ({len(watch.gone)} exited drained)" if watch.gone else ""
            typer.echo(
                f"{version} drained after {took:.1f}s: no live calls on "
                f"{_plural(len(watch.seen), 'worker')}{gone}"
            )
        for url in watch.accepting:
            typer.echo(f"note: {url} runs {version} and still accepts new calls")
    return 0


def fleet_command(
    urls: Annotated[
        list[str],
        typer.Argument(help="Workers' operations endpoints, e.g. http://10.0.0.7:8081."),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"workers": [...], "versions": {...}}.')
    ] = False,
    wait_drained_version: Annotated[
        str | None,
        typer.Option(
            "--wait-drained",
            metavar="VERSION",
            help="Block until no worker of VERSION has live calls; exit 3 if one vanished "
            "with live calls.",
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between polls while waiting.")
    ] = 1.0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=0.0, help="Give up waiting after this many seconds (exit 1)."
        ),
    ] = 1800.0,
) -> None:
    """Show many workers at once: version, state, calls; or wait for a version to drain.

    Exits 2 only when no worker answers. With --wait-drained: 0 once drained, 1 on
    timeout, 3 when a worker vanished with live calls at last sight.
    """
    targets = list(dict.fromkeys(normalize_url(u) for u in urls))
    if wait_drained_version is not None:
        raise typer.Exit(_wait(targets, wait_drained_version, interval, timeout, as_json))
    rows = asyncio.run(poll(targets))
    if as_json:
        body = {
            "workers": [row.to_dict() for row in rows],
            "versions": versions_summary(rows),
        }
        typer.echo(json.dumps(body, indent=2))
    else:
        Console().print(render_fleet(rows))
    if not any(row.reachable for row in rows):
        _err(f"none of the {len(rows)} workers answered; check the URLs and --http-port")
        raise typer.Exit(2)
