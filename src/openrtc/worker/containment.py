"""Keeping a call's `sys.exit()` or `KeyboardInterrupt` inside that call.

asyncio lets SystemExit and KeyboardInterrupt out of a task: they stop the event loop,
and with it every other call on the worker. Each coroutine call's tasks (the ones its
code and its AgentSession create) run wrapped here, so such an exception, or any other
BaseException that is not a cancellation, becomes an ordinary error of that call: the
call ends FAILED naming it, the worker and the other calls carry on. A signal sent to
the worker process never reaches agent code this way (the lifespan handles signals on
the loop), so it still stops the worker.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_containing: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "openrtc_contained_call", default=None
)
_on_escape: dict[str, Callable[[str], None]] = {}
_installed: dict[asyncio.AbstractEventLoop, list[Any]] = {}
"""Per loop: the task factory found there, and how many job pools use ours."""


class ContainedExit(Exception):
    """A BaseException from a call's code, held as an ordinary error of that call."""


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def contained(coro: Coroutine[Any, Any, T], job_id: str) -> T:
    """Await `coro`; a non-cancellation BaseException fails call `job_id` instead of the loop."""
    try:
        return await coro
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:
        error = describe(exc)
        report = _on_escape.get(job_id)
        if report is not None:
            report(error)
        raise ContainedExit(error) from exc


def enter(job_id: str, on_escape: Callable[[str], None]) -> None:
    """From now on, tasks created in the current context belong to call `job_id`."""
    _on_escape[job_id] = on_escape
    _containing.set(job_id)


def leave(job_id: str) -> None:
    _on_escape.pop(job_id, None)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Wrap every task a contained call creates on `loop`; undone by the last `uninstall`."""
    if loop in _installed:
        _installed[loop][1] += 1
        return
    previous = loop.get_task_factory()
    _installed[loop] = [previous, 1]

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        context = kwargs.get("context")
        job_id = _containing.get() if context is None else context.get(_containing)
        if job_id is not None and job_id in _on_escape and asyncio.iscoroutine(coro):
            coro = contained(coro, job_id)
        if previous is not None:
            return previous(loop, coro, **kwargs)  # type: ignore[no-any-return]
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
    entry = _installed.get(loop)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _installed[loop]
        loop.set_task_factory(entry[0])
