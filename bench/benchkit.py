"""What every benchmark shares: the machine record, the percentile definition, process-tree
PSS and CPU, and `Worker`, the one way a benchmark starts the worker under test.

The worker is measured from outside with psutil, so what is counted is what the operating
system charges to the worker and every process it started (job processes, the forkserver).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from openrtc.deploy.rehearsal.workers import WorkerProcess, process_tree

if TYPE_CHECKING:
    from openrtc.devserver import DispatchServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
AGENTS = ROOT / "examples" / "agents"
MB = 2**20
_pinned: Path | None = None


def pin_source() -> Path:
    """Copy src/ once, so every worker of a run runs the same code whatever changes meanwhile.

    Workers started after this (ours and the rehearsal's) import openrtc from the copy.
    """
    global _pinned
    if _pinned is None:
        import shutil
        import tempfile

        copy = Path(tempfile.mkdtemp(prefix="openrtc-bench-src-")) / "src"
        shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _pinned = copy
        rest = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(copy), rest) if p)
    return _pinned


def tree_state() -> dict[str, Any]:
    """The commit and whether the working tree differs from it (what was measured)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        changed = [line[3:] for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        changed = []
    return {"commit": git_commit(), "src_files_changed_since_commit": changed}


# --- the machine --------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "livekit_agents": _version("livekit-agents"),
        "openrtc": tree_state(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def command_line() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(ROOT)
    return " ".join(["PYTHONPATH=src", ".venv/bin/python", str(script), *sys.argv[1:]])


def write_result(name: str, payload: dict[str, Any], results: Path = RESULTS) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- statistics -----------------------------------------------------------------------------


def nearest_rank(q: float, count: int) -> int:
    """1-based rank of the q-th percentile (q in 0..100) among `count` ordered values.

    The one percentile definition of every benchmark: the smallest value with at least q%
    of all values at or below it (nearest rank; no interpolation, so every percentile
    reported is a value that was measured, or a histogram bound that holds it).
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be between 0 and 100, got {q}")
    return max(1, math.ceil(q / 100 * count))


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of values; None when there are none."""
    ordered = sorted(values)
    rank = nearest_rank(q, len(ordered))
    return ordered[rank - 1] if ordered else None


def hist_diff(after: Sequence[int], before: Sequence[int] | None) -> list[int]:
    """Counts added between two readings of the same cumulative histogram."""
    if before is None:
        return list(after)
    return [a - b for a, b in zip(after, before, strict=True)]


def hist_percentile(edges: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """Upper edge of the bucket holding the q-th percentile (q in 0..100); inf past the last.

    The same nearest rank as `percentile`, read off a histogram of the values.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = nearest_rank(q, total)
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return float(edges[i]) if i < len(edges) else math.inf
    return math.inf


# --- a process tree, from outside -----------------------------------------------------------


class _Proc(Protocol):
    def memory_full_info(self) -> Any: ...

    def cpu_times(self) -> Any: ...


def sum_pss(procs: Iterable[_Proc]) -> tuple[int, int]:
    """(bytes of PSS summed, processes counted); processes that vanish meanwhile are skipped."""
    total = counted = 0
    for p in procs:
        try:
            total += int(p.memory_full_info().pss)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        counted += 1
    return total, counted


def sum_cpu_seconds(procs: Iterable[_Proc]) -> float:
    """User+system CPU of each process, plus what its reaped children used."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


# --- the worker under test ------------------------------------------------------------------


def server_env(server: DispatchServer) -> dict[str, str]:
    """What a worker needs to register with `server`."""
    return {
        "LIVEKIT_URL": server.ws_url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
    }


@dataclass(kw_only=True)
class Worker(WorkerProcess):
    """The one way a benchmark starts a worker: `WorkerProcess` running the pinned copy of
    src/ (`pin_source`), measured from outside (PSS and CPU of its whole process tree, the
    lines it logged)."""

    name: str = "worker"
    agents: Path = AGENTS

    def __post_init__(self) -> None:
        if self.python_path is None:
            self.python_path = _pinned or ROOT / "src"

    async def wait_accepting(self, timeout: float = 90.0) -> dict[str, Any]:
        """Until /snapshot shows a worker id and the state `accepting`; returns it.

        Under `--processes N` the parent's /snapshot lists its children: every one of
        them must be accepting, and `worker_id` holds their ids, comma separated.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(
                    f"worker {self.name} exited with {self.proc and self.proc.returncode} "
                    f"while starting; see {self.log_path}"
                )
            snap = await self.snapshot(2.0)
            ids = accepting_ids(snap)
            if ids:
                self.worker_id = ",".join(ids)
                return dict(snap or {})
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"worker {self.name} did not accept calls in {timeout:.0f}s; see {self.log_path}"
        )

    def pss_mb(self) -> tuple[float, int]:
        total, n = sum_pss(process_tree(self.pid))
        return total / MB, n

    def cpu_seconds(self) -> float:
        return sum_cpu_seconds(process_tree(self.pid))

    def log_size(self) -> int:
        """Bytes in the log now: a mark to count lines written after it (`log_lines`)."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_lines(self, start: int = 0, end: int | None = None) -> list[str]:
        """The log's lines between two `log_size` marks (whole log by default)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(start)
                data = f.read() if end is None else f.read(max(0, end - start))
        except OSError:
            return []
        return data.decode(errors="replace").splitlines()


# --- what a worker's /snapshot says, whether it is one process or a parent of several -------


def worker_snapshots(snap: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The snapshots of the processes that run calls: the worker's own, or, under
    `openrtc start --processes N`, each child's as the parent lists it (a child that did
    not answer is left out)."""
    if not snap:
        return []
    if "children" not in snap:
        return [snap]
    return [
        dict(c["snapshot"])
        for c in snap.get("children") or []
        if isinstance(c, dict) and isinstance(c.get("snapshot"), dict)
    ]


def accepting_ids(snap: dict[str, Any] | None) -> list[str]:
    """Every worker id, once every process has registered and accepts calls; else []."""
    snaps = worker_snapshots(snap)
    expected = int((snap or {}).get("processes") or 1)
    if len(snaps) < expected:
        return []
    if not all(s.get("worker_id") and s.get("state") == "accepting" for s in snaps):
        return []
    return [str(s["worker_id"]) for s in snaps]


def _add(into: dict[str, Any], stats: dict[str, Any]) -> None:
    for key, value in stats.items():
        have = into.get(key)
        if key.endswith("_edges_ms"):
            into.setdefault(key, list(value))
        elif isinstance(value, bool):
            into[key] = bool(have) or value
        elif isinstance(value, int | float):
            into[key] = (have or 0) + value
        elif isinstance(value, list):
            if have is None:
                into[key] = list(value)
            else:
                into[key] = [a + b for a, b in zip(have, value, strict=True)]
        elif isinstance(value, dict):
            merged = dict(have or {})
            for k, v in value.items():
                merged[k] = merged.get(k, 0) + v
            into[key] = merged


def call_stats(snap: dict[str, Any] | None, pids: set[int] | None = None) -> dict[str, Any]:
    """The worker's `call_stats` (OPENRTC_CALL_STATS=1) summed over every process that
    runs calls: counters and histogram buckets add up, histogram edges are shared.

    With `pids`, only those processes count: readers pass the processes of their last
    reading, so a child restarted meanwhile counts from zero in the earlier ones, rather
    than subtracting its predecessor's totals.
    """
    total: dict[str, Any] = {}
    for s in worker_snapshots(snap):
        if pids is not None and s.get("pid") not in pids:
            continue
        _add(total, dict(s.get("call_stats") or {}))
    return total


def snapshot_pids(snap: dict[str, Any] | None) -> set[int]:
    return {int(s["pid"]) for s in worker_snapshots(snap) if s.get("pid") is not None}


def rejected_total(snap: dict[str, Any] | None, pids: set[int] | None = None) -> dict[str, int]:
    """Offers refused so far, by reason, summed over every process that takes calls."""
    out: dict[str, int] = {}
    for s in worker_snapshots(snap):
        if pids is not None and s.get("pid") not in pids:
            continue
        for reason, count in (s.get("rejected_total") or {}).items():
            out[reason] = out.get(reason, 0) + int(count)
    return out


def system_busy_seconds() -> float:
    """CPU seconds every core spent on anything but idling since boot, time the hypervisor
    stole included (`steal_seconds`): both leave the worker less of the machine."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave other guests while this one wanted to run, since
    boot (0 outside a VM): a window with steal ran on a slower machine than it looks."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def own_cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def family_cpu_seconds() -> float:
    """CPU of this process plus every child it has reaped (and what those reaped)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


class OtherLoad:
    """CPU that neither this process nor its (reaped) children used, over a whole run.

    Read it once every child has exited: a benchmark run on a busy machine says so.
    """

    def __init__(self) -> None:
        self._busy = system_busy_seconds()
        self._mine = family_cpu_seconds()
        self._t = time.monotonic()

    def pct_of_a_core(self) -> float:
        other = (system_busy_seconds() - self._busy) - (family_cpu_seconds() - self._mine)
        return round(max(0.0, 100 * other / max(1e-9, time.monotonic() - self._t)), 1)
