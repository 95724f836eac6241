"""Agents and helpers for the tenancy tests: each agent says which tenant it serves."""

from __future__ import annotations

import time

from livekit.agents import Agent

from openrtc import current_tenant_id
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS

FAILING_TENANTS: set[str] = set()
"""Tenants whose calls raise while the agent starts, the way a bug for one client does."""


def fakes() -> dict[str, object]:
    return {"default_stt": FakeSTT(), "default_llm": FakeLLM(), "default_tts": FakeTTS()}


class OwnedLLM(FakeLLM):
    """A FakeLLM that says whose it is; per-call copies of it keep the owner."""

    def __init__(self, owner: str) -> None:
        super().__init__()
        self.owner = owner


def call(*, hold_s: float = 0.0, turns: tuple[str, ...] = ("hello",)) -> dict[str, object]:
    return {"turns": list(turns), "mode": "text", "pause_s": 0.0, "hold_s": hold_s}


class TenantAgent(Agent):
    def __init__(self) -> None:
        tenant = current_tenant_id()
        if tenant in FAILING_TENANTS:
            raise RuntimeError(f"agent bug for tenant {tenant}")
        super().__init__(instructions=f"You serve tenant {tenant}.")


class Broken(Agent):
    def __init__(self) -> None:
        raise RuntimeError("agent bug: cannot start")


class Blocker(Agent):
    """Blocks the whole event loop when the call starts (a sync call in async code)."""

    def __init__(self) -> None:
        super().__init__(instructions="You block.")

    async def on_enter(self) -> None:
        time.sleep(0.6)
