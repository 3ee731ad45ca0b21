"""Stand-in providers: real aiohttp servers on 127.0.0.1 that misbehave on request.

Each route plays one thing a third-party API does to us: answer, fail, rate-limit, send
garbage, stream too much, trickle, or hang. `StandIn.start()` runs one on a random port.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

HUGE_BODY_BYTES = 5 * 1024 * 1024
_CHUNK = b"x" * 65_536


class StandIn:
    """A running stand-in server; `url(path)` addresses one of its routes."""

    def __init__(self) -> None:
        self.port = 0
        # Set when /hang has received a request, so a test can act while a probe is in flight.
        self.hanging = asyncio.Event()
        # Headers and query of the most recent /healthy request, to check what a probe sent.
        self.last_headers: dict[str, str] = {}
        self.last_query: dict[str, str] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @classmethod
    @asynccontextmanager
    async def start(cls) -> AsyncIterator[StandIn]:
        standin = cls()
        app = web.Application()
        standin._add_routes(app.router)
        # handler_cancellation stops /hang and /endless as soon as the probe gives up; the
        # short shutdown_timeout bounds teardown should any handler still be running.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            standin.port = runner.addresses[0][1]
            yield standin
        finally:
            await runner.cleanup()

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/healthy", self._healthy)
        router.add_get("/slow", self._slow)
        router.add_get("/error500", self._error500)
        router.add_get("/error404", self._error404)
        router.add_get("/ratelimited", self._ratelimited)
        router.add_get("/binance", self._binance)
        router.add_get("/garbage", self._garbage)
        router.add_get("/empty", self._empty)
        router.add_get("/endless", self._endless)
        router.add_get("/huge", self._huge)
        router.add_get("/trickle", self._trickle)
        router.add_get("/hang", self._hang)
        router.add_get("/disconnect", self._disconnect)

    def _seen(self, request: web.Request) -> None:
        self.last_headers = dict(request.headers)
        self.last_query = dict(request.query)

    async def _healthy(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response({"ok": True, "data": [1]})

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", "100")) / 1000)
        return web.json_response({"ok": True})

    async def _error500(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "internal"}, status=500)

    async def _error404(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "not found"}, status=404)

    async def _ratelimited(self, request: web.Request) -> web.Response:
        headers = {
            "Retry-After": "7",
            "X-RateLimit-Limit": "30",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + 7),
        }
        return web.json_response({"error": "slow down"}, status=429, headers=headers)

    async def _binance(self, request: web.Request) -> web.Response:
        return web.json_response([{"symbol": "BTCUSDT"}], headers={"X-MBX-USED-WEIGHT-1M": "37"})

    async def _garbage(self, request: web.Request) -> web.Response:
        return web.Response(text="not json{", content_type="text/plain")

    async def _empty(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        # About 100 KB/s: it never ends, yet stays under a probe's body cap for seconds.
        while True:
            await response.write(b"x" * 1024)
            await asyncio.sleep(0.01)

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(HUGE_BODY_BYTES // len(_CHUNK)):
            await response.write(_CHUNK)
        await response.write_eof()
        return response

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while True:
            await response.write(b"x")
            await asyncio.sleep(0.2)

    async def _hang(self, request: web.Request) -> web.Response:
        self.hanging.set()
        await asyncio.sleep(3600)
        return web.Response()

    async def _disconnect(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        # Closing the connection cancels this handler (handler_cancellation); nothing is sent.
        await asyncio.sleep(3600)
        return web.Response()


def closed_port() -> int:
    """A local port nothing listens on, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
