"""Shared fixtures: stand-in providers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from standins import StandIn


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with StandIn.start() as server:
        yield server
