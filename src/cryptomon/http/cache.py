"""Encoded answers of read-model views, reused for up to a second.

Such an answer depends only on the read models and the clock (windows like
"the last 24 hours"), and monitoring data a second old is as good as new: a
dashboard polling many times a second, or a thousand of them, costs one
computation a second per view. Writes through the API (acknowledging,
triggering) empty the cache, so a client reads its own write.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from cryptomon.http.keys import RESPONSE_CACHE

MAX_AGE = 1.0
MAX_ENTRIES = 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    expires: float
    status: int
    content_type: str
    body: bytes
    etag: str | None  # a provider's version (see providers.py): If-Match needs it


def cached(handler: Handler) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        entries = request.app[RESPONSE_CACHE]
        now = time.monotonic()
        key = request.path_qs
        entry = entries.get(key)
        if entry is not None and now < entry.expires:
            cached = web.Response(
                body=entry.body, status=entry.status, content_type=entry.content_type
            )
            if entry.etag is not None:
                cached.headers["ETag"] = entry.etag
            return cached
        response = await handler(request)
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            if len(entries) >= MAX_ENTRIES:
                entries.clear()  # many distinct queries: start over rather than grow
            entries[key] = CachedAnswer(
                now + MAX_AGE,
                response.status,
                response.content_type,
                response.body,
                response.headers.get("ETag"),
            )
        return response

    answer.__name__ = handler.__name__
    return answer
