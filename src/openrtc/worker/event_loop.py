"""Run a worker's main coroutine on the event loop its settings name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..config import Runtime

T = TypeVar("T")
logger = logging.getLogger("openrtc.worker")


def run(main: Coroutine[Any, Any, T], runtime: Runtime) -> T:
    """`asyncio.run(main)`, on uvloop when `runtime.event_loop` asks for it.

    Every call of the process runs on this one loop, so its per-wakeup cost is paid on
    every audio frame of every call; uvloop trades the standard loop for libuv's.
    """
    if runtime.event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_announced(main))
    return asyncio.run(_announced(main))


async def _announced(main: Coroutine[Any, Any, T]) -> T:
    """Say which loop actually runs the calls (its implementation, not the setting)."""
    kind = type(asyncio.get_running_loop()).__module__.partition(".")[0]
    logger.info("event loop: %s", kind)
    return await main
