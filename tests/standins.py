"""Stand-in providers: real aiohttp servers on 127.0.0.1 that misbehave on request.

Each route plays one thing a third-party API does to us: answer, fail, rate-limit, send
garbage, stream too much, trickle, or hang. `StandIn.start()` runs one on a random port, over
TLS when given a server context. `RawStandIn` misbehaves below HTTP, where a framework would not
let it: connection resets and headers that trickle in.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

HUGE_BODY_BYTES = 5 * 1024 * 1024
FLOOD_BYTES = 100 * 1024 * 1024  # what /flood offers, streamed: never built in memory
_CHUNK = b"x" * 65_536


class StandIn:
    """A running stand-in server; `url(path)` addresses one of its routes."""

    def __init__(self, scheme: str = "http") -> None:
        self.scheme = scheme
        self.port = 0
        # Bytes each /flood request handed to its transport before the client hung up.
        self.flood_written: list[int] = []
        # Set when /hang has received a request, so a test can act while a probe is in flight.
        self.hanging = asyncio.Event()
        # Headers and query of the most recent /healthy request, to check what a probe sent.
        self.last_headers: dict[str, str] = {}
        self.last_query: dict[str, str] = {}
        # The chain head /rpc/node reports: it moves one block per eth_blockNumber call.
        self.head = 0x1000
        self.kraken_status = "maintenance"  # online, maintenance, cancel_only, post_only
        self.rpc_bodies: list[object] = []  # every JSON-RPC request body, parsed

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    @classmethod
    @asynccontextmanager
    async def start(cls, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[StandIn]:
        standin = cls("https" if ssl_context is not None else "http")
        app = web.Application()
        standin._add_routes(app.router)
        # handler_cancellation stops /hang and /endless as soon as the probe gives up; the
        # short shutdown_timeout bounds teardown should any handler still be running.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
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
        router.add_get("/flood", self._flood)
        router.add_get("/trickle", self._trickle)
        router.add_get("/hang", self._hang)
        router.add_get("/disconnect", self._disconnect)
        # Crypto providers that fail while answering HTTP 200, as their docs describe them.
        router.add_get("/kraken/SystemStatus", self._kraken_status)
        router.add_get("/bitfinex/platform/status", self._bitfinex_status)
        router.add_get("/solana/health", self._solana_health)
        router.add_post("/solana", self._solana_rpc)
        router.add_get("/etherscan/api", self._etherscan_v1)
        router.add_post("/rpc/node", self._rpc_node)
        router.add_post("/rpc/error", self._rpc_error)
        router.add_post("/rpc/slow", self._rpc_slow)
        router.add_route("*", "/echo", self._echo)
        router.add_get("/regional/{region}", self._regional)

    def _seen(self, request: web.Request) -> None:
        self.last_headers = dict(request.headers)
        self.last_query = dict(request.query)

    async def _healthy(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response({"ok": True, "data": [1]})

    async def _regional(self, request: web.Request) -> web.Response:
        """A provider seen from one region only (a regional block, a CDN edge down): it
        answers the probes whose User-Agent names that region, and 503 to the others."""
        self._seen(request)
        region = request.match_info["region"]
        if request.headers.get("User-Agent", "").endswith(f"(region {region})"):
            return web.json_response({"ok": True, "region": region})
        return web.json_response({"error": f"only {region} is served"}, status=503)

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

    async def _flood(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = FLOOD_BYTES
        await response.prepare(request)
        written = 0
        try:
            for _ in range(FLOOD_BYTES // len(_CHUNK)):
                await response.write(_CHUNK)
                written += len(_CHUNK)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client hung up, as it should once past its cap
        finally:
            self.flood_written.append(written)
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

    async def _kraken_status(self, request: web.Request) -> web.Response:
        # docs.kraken.com/api/docs/rest-api/get-system-status
        result = {"status": self.kraken_status, "timestamp": "2026-12-01T12:00:00Z"}
        return web.json_response({"error": [], "result": result})

    async def _bitfinex_status(self, request: web.Request) -> web.Response:
        return web.json_response([0])  # docs.bitfinex.com: [1] operative, [0] maintenance

    async def _solana_health(self, request: web.Request) -> web.Response:
        return web.Response(text="behind")  # "ok", "behind" or "unknown"

    async def _solana_rpc(self, request: web.Request) -> web.Response:
        self._seen(request)
        call = await request.json()
        self.rpc_bodies.append(call)
        error = {
            "code": -32005,
            "message": "Node is behind by 42 slots",
            "data": {"numSlotsBehind": 42},
        }
        return web.json_response({"jsonrpc": "2.0", "error": error, "id": call["id"]})

    async def _etherscan_v1(self, request: web.Request) -> web.Response:
        # What Etherscan's retired V1 API answers since 2025-08-15, with HTTP 200.
        return web.json_response(
            {
                "status": "0",
                "message": "NOTOK",
                "result": "Exception: You are using a deprecated V1 endpoint, switch to"
                " Etherscan API V2 using https://docs.etherscan.io/v2-migration",
            }
        )

    async def _rpc_node(self, request: web.Request) -> web.Response:
        """A healthy EVM node: eth_blockNumber moves on each call, eth_chainId is mainnet's.
        A batch is answered in reverse order, as the JSON-RPC spec allows."""
        body = await request.json()
        self.rpc_bodies.append(body)
        calls = body if isinstance(body, list) else [body]
        replies = []
        for call in calls:
            if call["method"] == "eth_blockNumber":
                self.head += 1
                result: object = hex(self.head)
            elif call["method"] == "eth_chainId":
                result = "0x1"
            else:
                error = {"code": -32601, "message": "the method does not exist"}
                replies.append({"jsonrpc": "2.0", "id": call["id"], "error": error})
                continue
            replies.append({"jsonrpc": "2.0", "id": call["id"], "result": result})
        return web.json_response(replies[::-1] if isinstance(body, list) else replies[0])

    async def _echo(self, request: web.Request) -> web.Response:
        """What a careless API does: quote the request back, key and all, with the status
        asked for (?status=503)."""
        self._seen(request)
        body = await request.read()
        echoed = {
            "method": request.method,
            "key": request.headers.get("X-Api-Key", ""),
            "body": body.decode(),
            "error": {"code": -32001, "message": f"bad key {request.headers.get('X-Api-Key')}"},
        }
        status = int(request.query.get("status", "200"))
        return web.json_response(echoed, status=status)

    async def _rpc_error(self, request: web.Request) -> web.Response:
        call = await request.json()
        error = {"code": -32000, "message": "header not found"}
        return web.json_response({"jsonrpc": "2.0", "id": call["id"], "error": error})

    async def _rpc_slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", "300")) / 1000)
        return await self._rpc_node(request)


class _Raw(asyncio.Protocol):
    """One connection to `RawStandIn`: waits for the request head, then misbehaves by path."""

    def __init__(self, server: RawStandIn) -> None:
        self.server = server
        self.head = b""
        self.transport: asyncio.Transport | None = None
        self.trickling: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.trickling is not None:
            self.trickling.cancel()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or b"\r\n\r\n" in self.head:
            return  # the request was already answered (or is being): ignore the rest
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        path = self.head.split(b" ", 2)[1].decode()
        self.server.requests[path] = self.server.requests.get(path, 0) + 1
        if path.startswith("/reset-mid-body"):
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"[" + b"1," * 500
            )
            # Let the partial body reach the client before the reset.
            asyncio.get_running_loop().call_later(0.05, self.reset)
        elif path.startswith("/reset"):
            self.reset()
        elif path.startswith("/trickle-headers"):
            self.trickling = asyncio.create_task(self._trickle_headers())
        else:
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def reset(self) -> None:
        """Close with a TCP RST, not a FIN: SO_LINGER on, with a zero timeout."""
        if self.transport is None or self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    async def _trickle_headers(self) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\n")
        while not self.transport.is_closing():
            self.transport.write(b"X")  # one byte of a header line that never ends
            await asyncio.sleep(0.2)


class RawStandIn:
    """A plain asyncio server for what HTTP frameworks will not do: by request path,
    `/reset` resets the connection once the request is in, `/reset-mid-body` resets it
    partway through a body it announced, and `/trickle-headers` sends its header one
    byte at a time, forever."""

    def __init__(self) -> None:
        self.port = 0
        self.connections: set[_Raw] = set()
        self.requests: dict[str, int] = {}  # requests seen, by path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @classmethod
    @asynccontextmanager
    async def start(cls) -> AsyncIterator[RawStandIn]:
        standin = cls()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Raw(standin), "127.0.0.1", 0)
        standin.port = server.sockets[0].getsockname()[1]
        try:
            yield standin
        finally:
            server.close()
            connections = list(standin.connections)
            trickling = [c.trickling for c in connections if c.trickling is not None]
            for connection in connections:
                if connection.transport is not None:
                    connection.transport.abort()
            for task in trickling:
                task.cancel()
            await asyncio.gather(*trickling, return_exceptions=True)
            await server.wait_closed()


def closed_port() -> int:
    """A local port nothing listens on, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
