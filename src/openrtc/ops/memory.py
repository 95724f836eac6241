"""This process's memory, as operators should read it."""

from __future__ import annotations

import psutil


def process_memory() -> dict[str, float | None]:
    """USS is what this process alone holds; RSS also counts pages shared with others."""
    proc = psutil.Process()
    try:
        full = proc.memory_full_info()
        uss: float | None = full.uss / 2**20
        rss = full.rss / 2**20
    except (psutil.AccessDenied, AttributeError):
        uss, rss = None, proc.memory_info().rss / 2**20
    return {"rss_mb": round(rss, 1), "uss_mb": None if uss is None else round(uss, 1)}
