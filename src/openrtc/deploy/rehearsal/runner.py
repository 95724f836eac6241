"""The rehearsal: a blue-green deploy on one machine, step by step.

1. Start the loopback dispatch server and sign a manifest naming the old version.
2. Start K old workers (`openrtc start`, real subprocesses) and a steady stream of
   simulated calls of varied length.
3. Publish a manifest naming both versions and start K new workers; once they take
   calls, publish one naming only the new version (unless told not to): old workers
   stop taking calls within one poll.
4. Send SIGTERM to every old worker, as a platform retiring pods does; each drains and
   exits when its last call ends.
5. Let the stream finish, wait for every call to end, stop the new workers, and check:
   nothing dropped or unserved, no call accepted on the old version after the cutover,
   every audit chain whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...audit import AuditLog, verify_chain
from ...devserver import DispatchServer
from ..manifest import sign_manifest
from .report import CallSpan, ManifestChange, RehearsalReport, TimelineEntry, WorkerSpan
from .workers import WorkerProcess

logger = logging.getLogger("openrtc.deploy.rehearsal")


@dataclass(frozen=True)
class RehearsalConfig:
    agents_dir: Path
    workers: int = 2
    calls: int = 40
    from_version: str = "v1.0.0"
    to_version: str = "v2.0.0"
    rollback: bool = False
    call_rate: float = 4.0
    """Calls placed per second."""
    min_call_s: float = 0.5
    max_call_s: float = 4.0
    use_manifest: bool = True
    manifest_poll_interval: float = 0.5
    drain_timeout: float = 60.0
    seed: int = 7
    workdir: Path | None = None
    start_timeout: float = 60.0


class Rehearsal:
    def __init__(self, config: RehearsalConfig, *, on_event: Callable[[str], None] | None = None):
        self.config = config
        self.on_event = on_event
        self.t0 = time.time()
        old, new = config.from_version, config.to_version
        if config.rollback:
            old, new = new, old
        self.old_version, self.new_version = old, new
        self.report = RehearsalReport(
            from_version=old,
            to_version=new,
            rollback=config.rollback,
            workers_per_version=config.workers,
        )
        self.jobs: list[str] = []
        self.workers: list[WorkerProcess] = []
        self._rng = random.Random(config.seed)

    def note(self, what: str) -> None:
        entry = TimelineEntry(round(time.time() - self.t0, 3), what)
        self.report.timeline.append(entry)
        logger.info("%s", what)
        if self.on_event is not None:
            self.on_event(f"{entry.t:7.2f}s  {what}")

    async def run(self) -> RehearsalReport:
        cfg = self.config
        with contextlib.ExitStack() as stack:
            if cfg.workdir is None:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="openrtc-")))
            else:
                workdir = cfg.workdir
                workdir.mkdir(parents=True, exist_ok=True)
            try:
                await self._run(workdir)
            finally:
                await asyncio.gather(*(w.kill() for w in self.workers))
        self.report.duration_seconds = round(time.time() - self.t0, 2)
        return self.report

    async def _run(self, workdir: Path) -> None:
        cfg = self.config
        secret = secrets.token_urlsafe(32)
        secret_file = workdir / "membership.secret"
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o600)
        manifest = workdir / "manifest.json"
        coordinator = AuditLog(worker_id="coordinator", path=workdir / "audit-coordinator.jsonl")
        self._publish(manifest, [self.old_version], secret)

        async with DispatchServer(dispatch_deadline=10.0, offer_timeout=2.0) as server:
            env = {
                "LIVEKIT_URL": server.ws_url,
                "LIVEKIT_API_KEY": server.api_key,
                "LIVEKIT_API_SECRET": server.api_secret,
                "OPENRTC_DRAIN_TIMEOUT": str(cfg.drain_timeout),
            }
            if cfg.use_manifest:
                env["OPENRTC_MANIFEST"] = str(manifest)
                env["OPENRTC_MEMBERSHIP_SECRET_FILE"] = str(secret_file)
                env["OPENRTC_MANIFEST_POLL_INTERVAL"] = str(cfg.manifest_poll_interval)
            self.note(f"dispatch server up at {server.ws_url}")
            old = await self._start_workers(self.old_version, env, workdir)
            coordinator.emit(
                "deployment.started",
                version=self.new_version,
                from_version=self.old_version,
                rollback=cfg.rollback,
            )

            traffic = asyncio.create_task(self._traffic(server))
            await self._until_placed(max(1, cfg.calls // 4), traffic)
            if cfg.use_manifest:
                # both versions are members while the new one comes up: no moment without
                # a worker that takes calls
                self._publish(manifest, [self.old_version, self.new_version], secret)
                self.note(f"published manifest: active {self.old_version}, {self.new_version}")
            new = await self._start_workers(self.new_version, env, workdir)

            if cfg.use_manifest:
                self._publish(manifest, [self.new_version], secret)
                self.note(f"published manifest: active {self.new_version}")
                await self._until_not_accepting(old)
                self.report.cutover_at = round(time.time() - self.t0, 3)
                self.note(f"cutover: no {self.old_version} worker takes new calls")

            for w in old:
                w.terminate()
            self.note(f"SIGTERM sent to {len(old)} {self.old_version} worker(s)")
            if not cfg.use_manifest:
                await self._until_not_accepting(old)
                self.report.cutover_at = round(time.time() - self.t0, 3)
                self.note(f"cutover: every {self.old_version} worker reports full")

            await asyncio.gather(*(self._await_exit(w) for w in old))
            if cfg.rollback:
                coordinator.emit(
                    "deployment.rolled_back",
                    version=self.new_version,
                    from_version=self.old_version,
                    reason="rehearsal",
                )
            await traffic
            self.note(f"all {len(self.jobs)} calls placed; waiting for them to end")
            await self._settle(server)
            for w in new:
                w.terminate()
            await asyncio.gather(*(w.wait_exit(cfg.drain_timeout + 10) for w in new))
            self.note(f"{self.new_version} workers stopped")
            coordinator.emit("deployment.completed", version=self.new_version)
            coordinator.close()
            self._tally(server, old)
        self._check_audit(workdir)

    def _publish(self, path: Path, versions: list[str], secret: str) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(sign_manifest(versions, secret=secret))
        tmp.replace(path)
        if self.config.use_manifest:
            self.report.manifests.append(ManifestChange(self._since(time.time()), versions))

    def _since(self, ts: float) -> float:
        return round(ts - self.t0, 3)

    async def _start_workers(
        self, version: str, env: dict[str, str], workdir: Path
    ) -> list[WorkerProcess]:
        batch = [
            WorkerProcess.release(
                f"{version}-{i + 1}", version, self.config.agents_dir, workdir, env
            )
            for i in range(self.config.workers)
        ]
        self.workers.extend(batch)
        await asyncio.gather(*(w.start() for w in batch))
        self.note(f"started {len(batch)} {version} worker(s)")
        await asyncio.gather(*(w.wait_registered(self.config.start_timeout) for w in batch))
        ids = ", ".join(w.worker_id for w in batch)
        self.note(f"{version} worker(s) registered and accepting: {ids}")
        return batch

    async def _traffic(self, server: DispatchServer) -> None:
        cfg = self.config
        interval = 1.0 / cfg.call_rate
        next_at = time.monotonic()
        for i in range(cfg.calls):
            hold = self._rng.uniform(cfg.min_call_s, cfg.max_call_s)
            turns = ["hello", "what can you do"][: 1 + i % 2]
            job = await server.dispatch(
                simulated_call={"turns": turns, "mode": "text", "pause_s": 0.1, "hold_s": hold}
            )
            self.jobs.append(job.id)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _until_placed(self, n: int, traffic: asyncio.Task[None]) -> None:
        while len(self.jobs) < n and not traffic.done():
            await asyncio.sleep(0.05)

    async def _until_not_accepting(self, workers: list[WorkerProcess]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = await asyncio.gather(*(w.ready() for w in workers))
            if not any(states):
                return
            await asyncio.sleep(0.05)
        self.report.problems.append("old workers still accepting 30s after the cutover began")

    async def _await_exit(self, w: WorkerProcess) -> None:
        code = await w.wait_exit(self.config.drain_timeout + 10)
        if code is None:
            self.report.problems.append(f"{w.name} did not exit; killed")
            await w.kill()
        secs = None
        if w.exited_at is not None and w.sigterm_at is not None:
            secs = round(w.exited_at - w.sigterm_at, 3)
        self.report.old_worker_exit_seconds[w.name] = secs
        self.report.old_worker_exit_codes[w.name] = code
        self.note(f"{w.name} exited with code {code} after {secs}s")

    async def _settle(self, server: DispatchServer) -> None:
        for job_id in list(self.jobs):
            with contextlib.suppress(TimeoutError):
                await server.wait_job(
                    job_id,
                    {"success", "failed", "cancelled", "unserved", "dropped"},
                    timeout=self.config.drain_timeout + 30,
                )

    def _tally(self, server: DispatchServer, old: list[WorkerProcess]) -> None:
        r = self.report
        version_of = {w.worker_id: w.version for w in self.workers}
        mine = set(self.jobs)
        jobs = [j for j in server.jobs() if j.id in mine]
        r.calls_placed = len(jobs)
        cutover = None if r.cutover_at is None else self.t0 + r.cutover_at
        by_version: dict[str, int] = {}
        for j in jobs:
            state = j.state.value
            if state == "success":
                r.calls_completed += 1
            elif state == "failed":
                r.calls_failed += 1
            elif state == "cancelled":
                r.calls_cancelled += 1
            elif state == "dropped":
                r.calls_dropped += 1
            elif state == "unserved":
                r.calls_unserved += 1
            version = version_of.get(j.worker_id or "")
            if version is not None and j.assigned_at is not None:
                by_version[version] = by_version.get(version, 0) + 1
                if version == self.old_version and cutover is not None and j.assigned_at > cutover:
                    r.post_cutover_calls_on_old += 1
        r.calls_by_version = by_version
        r.calls = [
            CallSpan(
                job_id=j.id,
                version=version_of.get(j.worker_id or ""),
                start=None if j.assigned_at is None else self._since(j.assigned_at),
                end=None if j.ended_at is None else self._since(j.ended_at),
                state=j.state.value,
            )
            for j in jobs
        ]
        r.workers = [
            WorkerSpan(
                name=w.name,
                version=w.version,
                role="old" if w in old else "new",
                started=self._since(w.started_at or self.t0),
                sigterm=None if w.sigterm_at is None else self._since(w.sigterm_at),
                exited=None if w.exited_at is None else self._since(w.exited_at),
                exit_code=w.exit_code,
            )
            for w in self.workers
        ]
        events = server.events()
        for w in old:
            r.sigterm_to_full_ms[w.name] = sigterm_to_full(events, w)
            ends = [
                j.ended_at for j in jobs if j.worker_id == w.worker_id and j.ended_at is not None
            ]
            if ends and w.exited_at is not None:
                r.last_call_end_to_exit_ms[w.name] = round((w.exited_at - max(ends)) * 1000, 1)
            else:
                r.last_call_end_to_exit_ms[w.name] = None

    def _check_audit(self, workdir: Path) -> None:
        ok, records = True, 0
        for path in sorted(workdir.glob("audit-*.jsonl")):
            chain = verify_chain(path)
            records += chain.records
            if not chain.ok:
                ok = False
                self.report.problems.append(f"audit chain {path.name}: {chain.reason}")
        self.report.audit_chain_ok = ok
        self.report.audit_records = records


def sigterm_to_full(events: list[Any], w: WorkerProcess) -> float | None:
    """Milliseconds from SIGTERM to the server hearing the worker is full (None if it was)."""
    if w.sigterm_at is None:
        return None
    last_before: str | None = None
    for e in events:
        if e.kind != "worker_status" or e.fields.get("worker_id") != w.worker_id:
            continue
        if e.ts <= w.sigterm_at:
            last_before = e.fields.get("status")
        elif e.fields.get("status") == "WS_FULL":
            if last_before == "WS_FULL":
                return None
            return round(float(e.ts - w.sigterm_at) * 1000, 1)
    return None


def dumps(report: RehearsalReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
