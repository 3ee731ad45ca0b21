"""REST handlers, one module per resource: the seed's endpoints at the seed's paths,
plus the event log. The route table (`http/routes.py`) says which serves what.

Handlers read the in-memory read models (no heavy work per request) or, for
logs and the event log, one indexed page of the store. Bad input raises an
error that the route table's guard (errors.guarded) turns into a 4xx.

This module holds what every view uses: the JSON answer, the read models and
the log of a request, and reading one's own write."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from aiohttp import web

from cryptomon.events.log import EventLog
from cryptomon.http.keys import READ_MODELS, RESPONSE_CACHE, STORE
from cryptomon.readmodels import ReadModels

HOUR = 3600.0
DAY = 24 * HOUR
# Reads waiting for the read models to show a write they just made.
WRITE_VISIBLE_SECONDS = 5.0

_encoder = msgspec.json.Encoder()


def respond(body: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def models_of(request: web.Request) -> ReadModels:
    return request.app[READ_MODELS]


def log_of(request: web.Request) -> EventLog:
    return request.app[STORE]


async def visible(request: web.Request, position: int) -> None:
    """After a write: wait (a little) until the read models show it, and drop
    cached answers, so the writer reads its own write."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WRITE_VISIBLE_SECONDS):
            await models_of(request).wait_for(position)
    request.app[RESPONSE_CACHE].clear()


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def series_step(hours: float) -> int:
    return 60 if hours <= 6 else 3600 if hours <= 24 * 7 else 86_400
