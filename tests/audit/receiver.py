"""A small audit collector for tests: aiohttp, bearer token, de-duplication by (worker, seq).

It can be stopped and started again on the same port, as a collector that is down.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from aiohttp import web

from openrtc.deploy.rehearsal.workers import free_port


class Receiver:
    def __init__(self, token: str) -> None:
        self.token = token
        self.port = free_port()
        self.kept: dict[tuple[str, int], bytes] = {}
        self.order: list[tuple[str, int]] = []
        """Keys in the order their first copy arrived."""
        self.duplicates = 0
        self.conflicts: list[tuple[str, int]] = []
        self.posts = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/audit"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/audit", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            self.refused += 1
            return web.Response(status=401)
        self.posts += 1
        for line in (await request.read()).splitlines():
            envelope = json.loads(line)
            key = (envelope["worker"], envelope["record"]["seq"])
            if key in self.kept:
                if json.loads(self.kept[key]) == envelope:
                    self.duplicates += 1
                else:
                    self.conflicts.append(key)
                continue
            self.kept[key] = line
            self.order.append(key)
        return web.Response(status=204)

    def records(self, worker: str) -> list[dict[str, object]]:
        return [json.loads(self.kept[k])["record"] for k in self.order if k[0] == worker]

    def workers(self) -> list[str]:
        return list(dict.fromkeys(w for w, _ in self.order))

    def write(self, path: Path) -> Path:
        path.write_bytes(b"".join(self.kept[k] + b"\n" for k in self.order))
        return path
