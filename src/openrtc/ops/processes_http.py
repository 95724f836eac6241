"""The operations endpoint of a multi-process worker: one port that covers every child.

Each child process serves its own endpoint (`ops.http`) on a private loopback port; the
supervising parent serves this one on the configured port and answers from the
children's: /readyz is ready while at least one child is (and the parent is not
draining), /metrics merges the children's series under a `process` label, /snapshot
lists each child's snapshot under its index, and POST /drain drains them all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families

from .endpoint import Endpoint

logger = logging.getLogger("openrtc.http")

CHILD_TIMEOUT_S = 2.0
"""How long the parent waits for one child's answer (a busy loop answers late)."""
MAX_CHILD_BODY = 8 * 1024 * 1024
"""Bytes the parent reads from one child's answer at most."""


@dataclass(frozen=True)
class ChildView:
    """What the endpoint knows of one child: where it answers, if it is up."""

    index: int
    pid: int | None
    ops_url: str | None
    restarts: int
    state: str
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "process": self.index,
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "ops_url": self.ops_url,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class Answer:
    child: ChildView
    status: int | None
    body: str
    error: str | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.status is not None else None
        except ValueError:
            return None


class _Merged:
    """A collector that yields already-built metric families (for one exposition)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merge_metrics(expositions: list[tuple[int, str]]) -> list[Metric]:
    """Families from each child's text exposition, every sample labelled with its process."""
    merged: dict[str, Metric] = {}
    for index, text in expositions:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = into
            for s in family.samples:
                labels = {**s.labels, "process": str(index)}
                into.add_sample(s.name, labels, s.value, s.timestamp, s.exemplar)
    return list(merged.values())


class ProcessesEndpoint(Endpoint):
    """/healthz, /readyz, /metrics, /snapshot and POST /drain for every child at once."""

    def __init__(
        self,
        children: Callable[[], list[ChildView]],
        *,
        host: str,
        port: int,
        admin_token: str | None,
        on_drain: Callable[[str, str], None],
        draining: Callable[[], bool],
        info: Callable[[], dict[str, Any]],
    ) -> None:
        super().__init__(host=host, port=port, admin_token=admin_token)
        self.children = children
        self.on_drain = on_drain
        self.draining = draining
        self.info = info
        self._session: aiohttp.ClientSession | None = None

    scope = " for every process"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHILD_TIMEOUT_S))
        await super().start()

    async def aclose(self) -> None:
        await super().aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- asking the children --------------------------------------------------------------
    async def _ask(self, child: ChildView, path: str, accept: str | None = None) -> Answer:
        if child.ops_url is None or self._session is None:
            return Answer(child, None, "", error=child.state)
        headers = {"Accept": accept} if accept else {}
        try:
            async with self._session.get(child.ops_url + path, headers=headers) as resp:
                body = await resp.content.read(MAX_CHILD_BODY)
                return Answer(child, resp.status, body.decode("utf-8", "replace"))
        except (aiohttp.ClientError, TimeoutError) as e:
            return Answer(child, None, "", error=type(e).__name__)

    async def _ask_all(self, path: str, accept: str | None = None) -> list[Answer]:
        return list(await asyncio.gather(*(self._ask(c, path, accept) for c in self.children())))

    # --- the routes ---------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness of the parent: it answers, so it supervises; children are listed."""
        answers = await self._ask_all("/healthz")
        children = [
            {**a.child.to_dict(), "ok": a.status == 200, **({"error": a.error} if a.error else {})}
            for a in answers
        ]
        return web.json_response({"ok": True, **self.info(), "children": children})

    async def readyz(self, request: web.Request) -> web.Response:
        answers = await self._ask_all("/readyz")
        children = []
        for a in answers:
            said = a.json() or {}
            children.append(
                {
                    "process": a.child.index,
                    "ready": a.status == 200,
                    "state": said.get("state", a.child.state),
                    **({"reason": said["reason"]} if "reason" in said else {}),
                }
            )
        ready_children = sum(1 for c in children if c["ready"])
        if self.draining():
            ready, reason = False, "draining"
        else:
            ready, reason = ready_children > 0, "no process is ready"
        body: dict[str, Any] = {"ready": ready, "ready_processes": ready_children}
        if not ready:
            body["reason"] = reason
        body["children"] = children
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        answers = await self._ask_all("/metrics", accept="text/plain")
        texts = [(a.child.index, a.body) for a in answers if a.status == 200]
        families = merge_metrics(texts)
        views = self.children()
        up = GaugeMetricFamily("openrtc_processes_up", "Worker processes answering their endpoint.")
        up.add_metric([], len(texts))
        restarts = CounterMetricFamily(
            "openrtc_process_restarts",
            "Worker processes restarted by the supervisor after they ended.",
            labels=["process"],
        )
        for v in views:
            restarts.add_metric([str(v.index)], v.restarts)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged([*families, up, restarts]))
        encoder, content_type = choose_encoder(request.headers.get("Accept") or "")
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def snapshot(self, request: web.Request) -> web.Response:
        answers = await self._ask_all("/snapshot")
        children = []
        active = 0
        for a in answers:
            snap = a.json() if a.status == 200 else None
            if isinstance(snap, dict):
                active += int(snap.get("active_sessions", 0))
            entry = {**a.child.to_dict(), "snapshot": snap}
            if a.error:
                entry["error"] = a.error
            children.append(entry)
        body = {**self.info(), "active_sessions": active, "children": children}
        return web.Response(text=json.dumps(body), content_type="application/json")

    def begin_drain(self, actor: str) -> dict[str, Any]:
        self.on_drain("POST /drain", actor)
        return {"processes": len(self.children())}

    def drain_refused(self, request: web.Request) -> None:
        logger.warning("POST /drain refused: bad or missing admin token (from %s)", request.remote)
