"""One `openrtc start` worker as a real subprocess, driven the way a platform drives it."""

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    name: str
    version: str
    agents_dir: Path
    workdir: Path
    env: dict[str, str]
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    worker_id: str = ""
    started_at: float = 0.0
    sigterm_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def audit_path(self) -> Path:
        return self.workdir / f"audit-{self.name}.jsonl"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    async def start(self) -> None:
        self.port = free_port()
        args = [
            sys.executable,
            "-m",
            "openrtc.cli.main",
            "start",
            str(self.agents_dir),
            "--deployment-version",
            self.version,
            "--http-port",
            str(self.port),
            "--audit-path",
            str(self.audit_path),
            *self.extra_args,
        ]
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = self.log_path.open("ab")
        self.started_at = time.time()
        self.proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
        )
        log.close()

    async def snapshot(self, timeout: float = 1.0) -> dict[str, Any] | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
                http.get(f"{self.ops_url}/snapshot") as resp,
            ):
                if resp.status != 200:
                    return None
                return dict(json.loads(await resp.text()))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def ready(self) -> bool:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http,
                http.get(f"{self.ops_url}/readyz") as resp,
            ):
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_registered(self, timeout: float) -> None:
        """Until the worker answers /snapshot with a worker id and takes calls."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(
                    f"worker {self.name} exited with {self.proc.returncode} while starting; "
                    f"see {self.log_path}"
                )
            snap = await self.snapshot()
            if snap and snap.get("worker_id") and snap.get("state") != "starting":
                self.worker_id = str(snap["worker_id"])
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"worker {self.name} did not register in {timeout:.0f}s; see {self.log_path}"
        )

    def terminate(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.sigterm_at = time.time()
            self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None
        self.exited_at = time.time()
        self.exit_code = code
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
