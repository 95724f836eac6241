"""Shared fixtures: a loopback dispatch server for every test that needs one."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from openrtc.devserver import DispatchServer

# Test files run in parallel (scripts/test.sh): every worker a test starts without naming
# its operations port listens on a free one instead of the default 8081.
os.environ.setdefault("OPENRTC_HTTP_PORT", "0")


@pytest.fixture
async def devserver() -> AsyncIterator[DispatchServer]:
    async with DispatchServer(dispatch_deadline=5.0, offer_timeout=2.0) as server:
        yield server
