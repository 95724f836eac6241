"""What a worker does about its link to the dispatch server: pace, name and remember.

The link carries offers and job statuses only; a call's media never depends on it. So
a lost link is retried with capped exponential backoff, each kind of failure is named
once in one line an operator can act on, and the final statuses of calls that end
while it is down are kept until the server is back (or audited as unreported).
"""

from __future__ import annotations

import random

import aiohttp
from livekit.protocol import agent as lk_proto

FIRST_RETRY_S = 0.5
"""Wait before the first retry after a failure."""
MAX_RETRY_S = 10.0
"""The longest wait between two attempts."""


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` + 1: doubling from FIRST_RETRY_S, capped, jittered."""
    base = min(FIRST_RETRY_S * float(2 ** min(attempt, 16)), MAX_RETRY_S)
    return base * random.uniform(0.8, 1.0)


def describe_failure(url: str, error: BaseException) -> tuple[str, str]:
    """(kind, one line for the operator) for a failed attempt or a broken link."""
    if isinstance(error, aiohttp.WSServerHandshakeError):
        if error.status in (401, 403):
            return "refused", (
                f"the dispatch server at {url} refused this worker's token "
                f"(HTTP {error.status}): check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        return "handshake", (
            f"the dispatch server at {url} answered HTTP {error.status} instead of a "
            "websocket: check LIVEKIT_URL"
        )
    if isinstance(error, aiohttp.ClientConnectorError):
        return "unreachable", (
            f"cannot reach the dispatch server at {url} ({error.os_error.strerror or error}): "
            "check LIVEKIT_URL and the network"
        )
    if isinstance(error, TimeoutError):
        return "unreachable", (
            f"the dispatch server at {url} did not answer in time: check LIVEKIT_URL "
            "and the network"
        )
    if isinstance(error, OSError | aiohttp.ClientError):
        return "unreachable", f"cannot reach the dispatch server at {url} ({error})"
    code = getattr(error, "status_code", None)
    if isinstance(code, int):
        return "lost", f"the dispatch server at {url} closed the link (code {code})"
    text = str(error) or type(error).__name__
    return "lost", f"lost the dispatch server at {url} ({text[:200]})"


class HeldOutcomes:
    """Final job statuses that could not be sent while the link was down."""

    def __init__(self) -> None:
        self._held: dict[str, lk_proto.UpdateJobStatus] = {}

    def hold(self, update: lk_proto.UpdateJobStatus) -> None:
        kept = lk_proto.UpdateJobStatus()
        kept.CopyFrom(update)
        self._held[update.job_id] = kept

    def take(self) -> list[lk_proto.UpdateJobStatus]:
        held, self._held = list(self._held.values()), {}
        return held

    def summary(self) -> dict[str, str]:
        """job id -> status name, for the audit."""
        return {
            job_id: lk_proto.JobStatus.Name(update.status) for job_id, update in self._held.items()
        }
