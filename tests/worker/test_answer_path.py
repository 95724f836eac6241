"""The availability answer does the cap check and the reply, nothing else, over the wire.

A refusal's audit record and log line, and the audit file's writes, happen after the
reply has gone out: a stalled log stream or a stalled audit writer never holds an
answer, and the caps stay exact while they are stalled.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from openrtc import AgentPool
from openrtc.audit import AuditEvent
from openrtc.config import AuditSettings, PoolConfig, Runtime
from openrtc.devserver import DispatchServer, JobRecord
from openrtc.ops.metrics import PoolMetrics
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running, wait_until

from .agents import SalesAgent

FAKES = {"default_stt": FakeSTT(), "default_llm": FakeLLM(), "default_tts": FakeTTS()}
HOLD = {"turns": ["hello"], "mode": "text", "pause_s": 0.0, "hold_s": 3.0}


def capped_pool(cap: int, audit_path: Path) -> AgentPool:
    return AgentPool(
        agents={"sales": SalesAgent},
        max_concurrent_sessions=cap,
        **FAKES,
        config=PoolConfig.from_env(
            runtime=Runtime(prewarm_models=False), audit=AuditSettings(path=audit_path)
        ),
    )


class ServerThread:
    """The dispatch server on a loop of its own, so it reads answers while the worker's
    loop is stalled (as a real LiveKit server would)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = DispatchServer(dispatch_deadline=5.0, offer_timeout=4.0)
        self.call(self.server.start())

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def on_loop(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.call(self.server.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def server_thread() -> Iterator[ServerThread]:
    st = ServerThread()
    try:
        yield st
    finally:
        st.close()


class StalledLogStream(logging.Handler):
    """A log stream that stalls on each refusal line (a full pipe to a log shipper) until
    the server has the refused offer's answer, or gives up after `patience` seconds."""

    def __init__(self, server: DispatchServer, patience: float = 4.0) -> None:
        super().__init__(logging.INFO)
        self.server = server
        self.patience = patience
        self.answered_first: list[str] = []
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not str(record.msg).startswith("refused job") or not record.args:
            return
        job_id = str(record.args[0])  # type: ignore[index]
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline:
            offers = self.server.job(job_id).offers
            # answered_in_ms is set by an answer only (an offer that times out has none)
            if offers and offers[-1].answered_in_ms is not None:
                self.answered_first.append(job_id)
                return
            time.sleep(0.005)
        self.held.append(job_id)


@pytest.fixture
def stalled_log(server_thread: ServerThread) -> Iterator[StalledLogStream]:
    handler = StalledLogStream(server_thread.server)
    pool_logger = logging.getLogger("openrtc.pool")
    level = pool_logger.level
    pool_logger.setLevel(logging.INFO)
    pool_logger.addHandler(handler)
    try:
        yield handler
    finally:
        pool_logger.removeHandler(handler)
        pool_logger.setLevel(level)


async def test_a_refusal_is_answered_before_its_log_line_and_audit_record_are_written(
    server_thread: ServerThread, stalled_log: StalledLogStream, tmp_path: Path
) -> None:
    srv = server_thread.server
    pool = capped_pool(1, tmp_path / "audit.jsonl")
    async with running(pool, srv):
        refused = [
            await server_thread.on_loop(
                srv.dispatch(metadata={"agent": "nobody"}, simulated_call=HOLD, deadline=0.5)
            )
            for _ in range(3)
        ]
        for job in refused:
            await server_thread.on_loop(srv.wait_job(job.id, {"unserved"}, 20))
        await wait_until(lambda: len(stalled_log.answered_first + stalled_log.held) >= 3)
    # the log line of each refusal waited for its answer to reach the server: had the
    # line been written first, the stalled stream would have held the answer back
    assert stalled_log.held == []
    assert set(stalled_log.answered_first) >= {j.id for j in refused}
    pool.audit_log.flush()
    refusals = [e for e in pool.audit_log.recent(100) if e.event == "worker.rejected"]
    assert {e.fields["job_id"] for e in refusals} >= {j.id for j in refused}
    assert pool.runtime_snapshot().rejected_total["unknown_agent"] >= 3


class StalledAuditWriter:
    """An audit output that stalls the audit writer thread (and so the file's writes)
    until released, as a disk that stopped answering would."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.records: list[AuditEvent] = []

    def __call__(self, batch: Sequence[AuditEvent]) -> None:
        self.entered.set()
        self.release.wait(30)
        self.records.extend(batch)


@pytest.fixture
async def stalled_writer() -> AsyncIterator[StalledAuditWriter]:
    writer = StalledAuditWriter()
    try:
        yield writer
    finally:
        writer.release.set()


async def test_a_burst_is_answered_exactly_while_the_audit_writer_is_stalled(
    devserver: DispatchServer, stalled_writer: StalledAuditWriter, tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    pool = capped_pool(3, audit_file)
    pool.audit_log.attach(stalled_writer, "stalled")
    async with running(pool, devserver):
        await asyncio.to_thread(stalled_writer.entered.wait, 10)
        assert stalled_writer.entered.is_set()
        written_before = audit_file.stat().st_size if audit_file.exists() else 0
        jobs: list[JobRecord] = list(
            await asyncio.gather(
                *(devserver.dispatch(simulated_call=HOLD, deadline=1.0) for _ in range(12))
            )
        )
        for job in jobs:
            await devserver.wait_job(job.id, {"running", "unserved", "failed"}, 20)
        # every offer was answered, and exactly the cap admitted, with no audit record
        # reaching the file meanwhile
        offers = [o for j in jobs for o in j.offers]
        assert offers and all(o.answered_in_ms is not None for o in offers)
        assert sum(1 for j in jobs if j.worker_id == pool.worker_id) == 3
        assert pool.runtime_snapshot().active_sessions == 3
        assert (audit_file.stat().st_size if audit_file.exists() else 0) == written_before
        assert not stalled_writer.release.is_set()
        stalled_writer.release.set()
        assert await asyncio.to_thread(pool.audit_log.flush, 10)
        rejected = {
            e.fields["job_id"] for e in stalled_writer.records if e.event == "worker.rejected"
        }
        assert rejected == {j.id for j in jobs if j.worker_id is None}
        for job in jobs:
            if job.worker_id is not None:
                await devserver.end_call(job.id)


@pytest.mark.serial
async def test_the_worker_times_each_answer_from_when_its_burst_reached_the_read_loop(
    server_thread: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = server_thread.server
    pool = capped_pool(4, tmp_path / "audit.jsonl")
    decide = pool.decide

    def slow_decide(request: Any) -> Any:
        time.sleep(0.02)  # every decision holds the loop: later offers of a burst wait
        return decide(request)

    monkeypatch.setattr(pool, "decide", slow_decide)
    async with running(pool, srv):
        assert pool.answer_times.to_dict()["count"] == 0

        async def burst() -> list[JobRecord]:
            # four calls the worker takes: one offer each, no offer cut by a deadline
            return list(
                await asyncio.gather(
                    *(srv.dispatch(simulated_call=HOLD, deadline=5.0) for _ in range(4))
                )
            )

        jobs = await server_thread.on_loop(burst())
        for job in jobs:
            await server_thread.on_loop(srv.wait_job(job.id, {"running"}, 20))
        answers = pool.runtime_snapshot().offer_answers
        body = PoolMetrics(pool).render().decode()
        for job in jobs:
            await server_thread.on_loop(srv.end_call(job.id))
    offers = [o for j in jobs for o in j.offers]
    assert len(offers) == 4 and all(o.available for o in offers)
    assert all(o.answered_in_ms is not None for o in offers)
    assert answers["count"] == 4
    # each answer took at least its own decision, some offer of the burst waited behind
    # another, and the worker's part never exceeds the round trip the server saw
    assert answers["le_ms"]["10.0"] == 0
    assert answers["le_ms"]["25.0"] < 4
    assert answers["sum_ms"] >= 4 * 20
    assert answers["sum_ms"] <= sum(o.answered_in_ms or 0 for o in offers) + 1.0
    assert "openrtc_offer_answer_seconds_count 4.0" in body
    assert 'openrtc_offer_answer_seconds_bucket{le="0.01"} 0.0' in body
