"""`--metrics-jsonl PATH`: snapshots and call lifecycle events, one JSON object a line.

For operators without Prometheus, and for offline analysis: every line has `schema`
(bumped on incompatible changes), `type` and `ts`. Types: `snapshot` (every interval,
`runtime_snapshot().to_dict()` plus event-loop lag), `session_start`, `session_end`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..sessions import SessionInfo, SessionOutcome

if TYPE_CHECKING:
    from ..pool import AgentPool
    from .loop_lag import LoopLagMonitor

SCHEMA_VERSION = 1
logger = logging.getLogger("openrtc.metrics_jsonl")


class MetricsJsonl:
    def __init__(
        self, pool: AgentPool, path: Path, lag: LoopLagMonitor, *, interval: float = 5.0
    ) -> None:
        self.pool = pool
        self.path = path
        self.lag = lag
        self.interval = interval
        self._file: TextIO | None = None
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self.pool.add_start_listener(self._on_start)
        self.pool.add_end_listener(self._on_end)
        self._task = asyncio.create_task(self._run(), name="metrics_jsonl")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._write_snapshot()
        if self._file is not None:
            self._file.close()
            self._file = None

    async def _run(self) -> None:
        while True:
            self._write_snapshot()
            await asyncio.sleep(self.interval)

    def _write_snapshot(self) -> None:
        snap = self.pool.runtime_snapshot().to_dict()
        snap["event_loop_lag_ms"] = {
            "p50": round(self.lag.percentile(0.5) * 1000, 2),
            "p99": round(self.lag.percentile(0.99) * 1000, 2),
        }
        self._write("snapshot", snap)

    def _on_start(self, info: SessionInfo) -> None:
        self._write("session_start", info.to_dict())

    def _on_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self._write("session_end", {**info.to_dict(), **outcome.to_dict()})

    def _write(self, kind: str, body: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = {"schema": SCHEMA_VERSION, "type": kind, "ts": round(time.time(), 3), **body}
        try:
            self._file.write(json.dumps(line, default=str) + "\n")
            self._file.flush()
        except OSError as e:
            self.failures += 1
            logger.warning("cannot write %s: %s", self.path, e)
