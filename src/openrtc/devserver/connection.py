"""One worker's websocket: serialised sends, and the offers waiting for its answer.

Many dispatch tasks talk to the same worker at once, so sends go through one ordered
outbox and each outstanding offer is a future keyed by job id that the read loop resolves.
An offer's answer time is the worker's: it runs from the moment the request's frame
was written to the socket (`send` returns it) to the moment the read loop decoded the
answer (`Answer.arrived_at`), not from when a dispatch task got its turn on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass

from aiohttp import WSCloseCode, web
from livekit.protocol import agent


@dataclass(frozen=True)
class Answer:
    """A worker's availability answer and the loop time the read loop decoded it."""

    response: agent.AvailabilityResponse
    arrived_at: float


class WorkerGone(Exception):
    """The worker's socket closed before the message went out or the answer came back."""


class WorkerConnection:
    """The server side of one worker websocket."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        self._ws = ws
        self._transport = transport
        self._outbox: collections.deque[tuple[bytes, asyncio.Future[float]]] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._answers: dict[str, asyncio.Future[Answer]] = {}
        self.finished = asyncio.Event()
        """Set once the read loop has ended and the worker is recorded as disconnected."""

    async def send(self, msg: agent.ServerMessage) -> float:
        """Send one protobuf frame; returns the loop time it was written to the socket.

        Frames queued during one pass of the loop are written together, in order, by one
        writer at the start of the next: a burst of offers reaches the socket at once
        instead of between the other dispatch tasks' bookkeeping, so an early offer's
        answer is not left unread while the server is still busy sending the rest.
        Raises WorkerGone if the socket is closed or breaks.
        """
        if self._ws.closed:
            raise WorkerGone
        written: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._outbox.append((msg.SerializeToString(), written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_outbox())
        return await written

    async def _write_outbox(self) -> None:
        loop = asyncio.get_running_loop()
        while self._outbox:
            data, written = self._outbox.popleft()
            if written.done():
                continue  # its sender gave up (cancelled) before it went out
            try:
                await self._ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                written.set_exception(WorkerGone())
                continue
            written.set_result(loop.time())

    def expect_answer(self, job_id: str) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answers[job_id] = future
        return future

    def forget_answer(self, job_id: str) -> None:
        self._answers.pop(job_id, None)

    def resolve_answer(self, answer: agent.AvailabilityResponse) -> bool:
        """Hand an availability answer to the offer waiting for it, stamped with the time
        it was read (the waiting task may run later); False if none waits."""
        future = self._answers.pop(answer.job_id, None)
        if future is None or future.done():
            return False
        future.set_result(Answer(answer, future.get_loop().time()))
        return True

    def fail_pending(self) -> None:
        """Wake every offer still waiting on this worker: it will not answer now."""
        answers, self._answers = self._answers, {}
        for future in answers.values():
            if not future.done():
                future.set_exception(WorkerGone())

    def abort(self) -> None:
        """Cut the TCP connection without a close handshake, as a network failure would."""
        if self._transport is not None:
            self._transport.abort()

    async def close(self, timeout: float = 2.0) -> None:
        """Close with a normal close code; abort if the worker does not answer the close."""
        try:
            await asyncio.wait_for(self._ws.close(code=WSCloseCode.OK), timeout)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), timeout)
