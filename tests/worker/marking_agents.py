"""Agents that write which class runs, and in which process, to the file named by the
job's metadata key "marks" (the metadata reaches a job process whatever its
environment: livekit's fork server keeps the environment it started with)."""

from __future__ import annotations

import json
import os

from livekit.agents import Agent, get_job_context


def _mark(agent: Agent) -> None:
    job = get_job_context().job
    path = json.loads(job.metadata or "{}").get("marks")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{job.id} {type(agent).__name__} {os.getpid()}\n")


class MarkedSales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")
        _mark(self)  # built inside the job, before the call can end


class MarkedSupport(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Support.")
        _mark(self)  # built inside the job, before the call can end
