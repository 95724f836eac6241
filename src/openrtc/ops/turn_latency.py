"""Turn latency for /metrics: from the caller's last word to the agent's first.

livekit-agents measures it itself (`e2e_latency` in an assistant message's metrics,
set when both sides spoke audio); this observer hands each one to a histogram. It sees
calls that run in the worker's process (coroutine and thread isolation), not calls in
job processes.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Histogram

from ..sessions import SessionInfo, SessionOutcome

TURN_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


class TurnLatencyObserver:
    """A session observer (AgentPool.add_observer) feeding one histogram by agent."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram

    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        if session is None:
            return  # a call in a job process: its session lives there, not here
        agent = info.agent

        def on_item(event: Any) -> None:
            item = getattr(event, "item", None)
            if getattr(item, "role", None) != "assistant":
                return
            latency = (getattr(item, "metrics", None) or {}).get("e2e_latency")
            if isinstance(latency, (int, float)) and latency >= 0:
                self.histogram.labels(agent).observe(latency)

        session.on("conversation_item_added", on_item)

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        return None
