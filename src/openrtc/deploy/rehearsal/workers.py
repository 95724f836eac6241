"""One `openrtc start` worker as a real subprocess, driven the way a platform drives it.

The rehearsal starts its releases with it, and the benchmarks the worker they measure:
started, polled over its operations endpoint, sent SIGTERM, waited for and, when the run
is over, killed with every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and every descendant alive now (none once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass(kw_only=True)
class WorkerProcess:
    """`python -m openrtc.cli.main start AGENTS --http-port PORT *args`, its output in
    `log_path`. `command` replaces everything before `args` (a worker that is not the CLI);
    `python_path` goes first on its PYTHONPATH (the copy of the source a benchmark pins)."""

    name: str
    agents: Path
    log_path: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    version: str = ""
    """The deployment version it runs, where the caller gave one (`release`)."""
    command: list[str] | None = None
    python_path: Path | None = None
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    worker_id: str = ""
    started_at: float | None = None
    sigterm_at: float | None = None
    """Wall-clock time (time.time()) SIGTERM was sent, as the dispatch server's events use."""
    exited_at: float | None = None
    exit_code: int | None = None

    @classmethod
    def release(
        cls, name: str, version: str, agents: Path, workdir: Path, env: dict[str, str]
    ) -> WorkerProcess:
        """A worker of one release, as the rehearsal starts it: its log and its audit
        file (`audit-NAME.jsonl`) in `workdir`."""
        return cls(
            name=name,
            agents=agents,
            log_path=workdir / f"{name}.log",
            env=env,
            version=version,
            args=[
                "--deployment-version",
                version,
                "--audit-path",
                str(workdir / f"audit-{name}.jsonl"),
            ],
        )

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def argv(self) -> list[str]:
        if self.command is not None:
            return [*self.command, *self.args]
        return [
            sys.executable,
            "-m",
            "openrtc.cli.main",
            "start",
            str(self.agents),
            "--http-port",
            str(self.port),
            *self.args,
        ]

    async def start(self) -> None:
        self.port = free_port()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        if self.python_path is not None:
            paths = (str(self.python_path), env.get("PYTHONPATH", ""))
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.started_at = time.time()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(), env=env, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
            )

    async def get(self, path: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]] | None:
        """GET an endpoint of the worker: its status and JSON object ({} when the body is
        none), None when it does not answer."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
                http.get(f"{self.ops_url}{path}") as resp,
            ):
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return resp.status, body if isinstance(body, dict) else {}

    async def snapshot(self, timeout: float = 5.0) -> dict[str, Any] | None:
        got = await self.get("/snapshot", timeout)
        return got[1] if got is not None and got[0] == 200 else None

    async def ready(self) -> bool:
        """/readyz: whether it takes new calls."""
        got = await self.get("/readyz", 1.0)
        return got is not None and got[0] == 200

    async def healthy(self) -> bool:
        got = await self.get("/healthz", 5.0)
        return got is not None and got[0] == 200

    async def wait_registered(self, timeout: float) -> None:
        """Until the worker answers /snapshot with a worker id and has left `starting`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(
                    f"worker {self.name} exited with {self.proc.returncode} while starting; "
                    f"see {self.log_path}"
                )
            snap = await self.snapshot(1.0)
            if snap and snap.get("worker_id") and snap.get("state") != "starting":
                self.worker_id = str(snap["worker_id"])
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"worker {self.name} did not register in {timeout:.0f}s; see {self.log_path}"
        )

    def terminate(self) -> None:
        """SIGTERM, as a platform sends it to retire a worker; the time is recorded."""
        if self.alive:
            assert self.proc is not None
            self.sigterm_at = time.time()
            self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the worker exits, or None if it still runs at `timeout`."""
        if self.proc is None:
            return None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None
        if self.exit_code is None:
            self.exited_at, self.exit_code = time.time(), code
        return code

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then kill whatever is left after `timeout` seconds."""
        self.terminate()
        if await self.wait_exit(timeout) is None:
            await self.kill()

    async def kill(self) -> None:
        """Kill the worker and every process it started (the run is over)."""
        if self.proc is None:
            return
        for p in reversed(process_tree(self.pid) if self.alive else []):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
