"""Encoded answers of read-model views, reused for up to a second.

Such an answer depends only on the read models and the clock (windows like
"the last 24 hours"), and monitoring data a second old is as good as new: a
dashboard polling many times a second, or a thousand of them, costs one
computation a second per view. Writes through the API (acknowledging,
triggering) empty the cache, so a client reads its own write. An answer is kept
with the headers its handler set (a provider's ETag, `/metrics`' full content type
with its format version).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

MAX_AGE = 1.0
MAX_ENTRIES = 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    expires: float
    status: int
    body: bytes
    # The handler's own: the full Content-Type, a provider's ETag (If-Match needs it).
    headers: tuple[tuple[str, str], ...]


def cached(handler: Handler, entries: dict[str, CachedAnswer]) -> Handler:
    """`handler`, its answers kept in `entries` (the app's `RESPONSE_CACHE`, which writes
    empty) for `MAX_AGE`."""

    async def answer(request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        # The request line's target as sent: `path_qs` would build a URL and a string
        # from it on every request. Two spellings of one query are two entries.
        key = request.raw_path
        entry = entries.get(key)
        if entry is not None and now < entry.expires:
            return web.Response(body=entry.body, status=entry.status, headers=entry.headers)
        response = await handler(request)
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            if len(entries) >= MAX_ENTRIES:
                entries.clear()  # many distinct queries: start over rather than grow
            entries[key] = CachedAnswer(
                now + MAX_AGE, response.status, response.body, tuple(response.headers.items())
            )
        return response

    answer.__name__ = handler.__name__
    return answer
