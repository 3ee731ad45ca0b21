"""Shared fixtures: stand-in providers on 127.0.0.1, a throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ci import IN_CI
from hypothesis import settings
from pgcluster import postgres_cluster, postgres_url
from standins import StandIn

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures for PostgreSQL-backed tests

if IN_CI:
    settings.register_profile("ci", derandomize=True)
    settings.load_profile("ci")


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with StandIn.start() as server:
        yield server
