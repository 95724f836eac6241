"""What a rehearsal found: the numbers operators check before trusting a deploy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TimelineEntry:
    t: float
    """Seconds since the rehearsal started."""
    what: str


@dataclass
class CallSpan:
    """One placed call: when it was assigned and ended (seconds since start), and where."""

    job_id: str
    version: str | None
    start: float | None
    end: float | None
    state: str


@dataclass
class WorkerSpan:
    """One worker process: started, sent SIGTERM, exited (seconds since start)."""

    name: str
    version: str
    role: str
    """"old" (drained by the deploy) or "new"."""
    started: float
    sigterm: float | None
    exited: float | None
    exit_code: int | None


@dataclass
class ManifestChange:
    t: float
    active: list[str]


@dataclass
class RehearsalReport:
    from_version: str
    to_version: str
    rollback: bool
    workers_per_version: int
    calls_placed: int = 0
    calls_completed: int = 0
    calls_failed: int = 0
    calls_cancelled: int = 0
    calls_dropped: int = 0
    calls_unserved: int = 0
    calls_by_version: dict[str, int] = field(default_factory=dict)
    post_cutover_calls_on_old: int = 0
    cutover_at: float | None = None
    """Seconds since start when every old worker had stopped accepting."""
    old_worker_exit_seconds: dict[str, float | None] = field(default_factory=dict)
    old_worker_exit_codes: dict[str, int | None] = field(default_factory=dict)
    sigterm_to_full_ms: dict[str, float | None] = field(default_factory=dict)
    last_call_end_to_exit_ms: dict[str, float | None] = field(default_factory=dict)
    audit_chain_ok: bool = False
    audit_records: int = 0
    duration_seconds: float = 0.0
    timeline: list[TimelineEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    calls: list[CallSpan] = field(default_factory=list)
    workers: list[WorkerSpan] = field(default_factory=list)
    manifests: list[ManifestChange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only when nothing was lost or late and no problem was noted during the run."""
        return (
            not self.problems
            and self.calls_dropped == 0
            and self.calls_unserved == 0
            and self.calls_failed == 0
            and self.post_cutover_calls_on_old == 0
            and self.audit_chain_ok
            and all(code == 0 for code in self.old_worker_exit_codes.values())
            and self.calls_completed == self.calls_placed
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def render(self) -> str:
        old, new = self.from_version, self.to_version
        lines = [f"{e.t:7.2f}s  {e.what}" for e in self.timeline]
        lines.append("")
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(f"{verdict}: {'rollback' if self.rollback else 'deploy'} {old} -> {new}")
        lines.append(
            f"  calls placed {self.calls_placed}, completed {self.calls_completed}, "
            f"failed {self.calls_failed}, dropped {self.calls_dropped}, "
            f"unserved {self.calls_unserved}"
        )
        by_version = ", ".join(f"{v}: {n}" for v, n in sorted(self.calls_by_version.items()))
        lines.append(f"  calls by version: {by_version or 'none'}")
        lines.append(f"  calls accepted on {old} after cutover: {self.post_cutover_calls_on_old}")
        for name, secs in self.old_worker_exit_seconds.items():
            code = self.old_worker_exit_codes.get(name)
            full = self.sigterm_to_full_ms.get(name)
            tail = self.last_call_end_to_exit_ms.get(name)
            lines.append(
                f"  {name}: SIGTERM->exit {_fmt(secs, 's')}, exit code {code}, "
                f"SIGTERM->full {_fmt(full, 'ms') if full is not None else 'already full'}, "
                f"last call end->exit {_fmt(tail, 'ms')}"
            )
        chain = "whole" if self.audit_chain_ok else "BROKEN"
        lines.append(f"  audit chain: {chain} ({self.audit_records} records)")
        lines.append(f"  took {self.duration_seconds:.1f}s")
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}{unit}" if unit == "s" else f"{value:.0f}{unit}"
