"""Agents that write which class runs, and in which process, to $OPENRTC_TEST_MARKS."""

from __future__ import annotations

import os

from livekit.agents import Agent, get_job_context


def _mark(agent: Agent) -> None:
    path = os.environ.get("OPENRTC_TEST_MARKS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{get_job_context().job.id} {type(agent).__name__} {os.getpid()}\n")


class MarkedSales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")
        _mark(self)  # built inside the job, before the call can end


class MarkedSupport(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Support.")
        _mark(self)  # built inside the job, before the call can end
