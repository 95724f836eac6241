"""Shared fixtures: a loopback dispatch server for every test that needs one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openrtc.devserver import DispatchServer


@pytest.fixture
async def devserver() -> AsyncIterator[DispatchServer]:
    async with DispatchServer(dispatch_deadline=5.0, offer_timeout=2.0) as server:
        yield server
