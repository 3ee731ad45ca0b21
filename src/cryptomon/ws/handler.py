"""`/ws/live`: one connection from upgrade to close, and `/ws/stats`.

The reading side lives here (the topics a client connects with, auth, subscribe,
unsubscribe, resume, pong, and WebSocket-level pings and pongs, which keep a client
alive as a JSON pong does);
the sending side is the hub's flush and, while frames wait for a client, its
`send_loop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from aiohttp.http_websocket import WebSocketError

from cryptomon.http.authorization import matches_any
from cryptomon.http.errors import InvalidParameter, TooManyRequests, problem_response
from cryptomon.http.keys import ARGUMENTS, CLIENT_LIMITS, FEED_TOKENS, HUB, READ_MODELS
from cryptomon.http.params import Param
from cryptomon.http.routes import Endpoint
from cryptomon.http.schemas import ConnectionView, WebSocketStats
from cryptomon.isotime import iso_time
from cryptomon.ws.hub import CONTROL, Client, Hub
from cryptomon.ws.messages import (
    DEFAULT_TOPICS,
    OPT_IN_TOPICS,
    PROVIDER_TOPIC_PREFIX,
    SUBSCRIBING,
    TOPICS,
    ClientMessage,
    ConnectionEstablished,
    Frame,
    Subscribed,
    encode,
)

MAX_MESSAGE_BYTES = 64 * 1024
AUTH_TIMEOUT_SECONDS = 10.0
# Inbound messages: a burst of this many, refilled at this rate per second.
INBOUND_BURST = 200
INBOUND_PER_SECOND = 50.0
POLICY_VIOLATION = WSCloseCode.POLICY_VIOLATION
# How long a client refused for too many connections should wait before trying again.
HEARTBEAT_RETRY_SECONDS = 30.0

_decoder = msgspec.json.Decoder(ClientMessage)


async def live(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    # The route table's check (`authorization.feed_check`) refused a wrong token and
    # says which the first message must carry, if the request carried none.
    tokens = request[FEED_TOKENS]
    since = request[ARGUMENTS].integer("since")
    if request.headers.get(hdrs.UPGRADE, "").strip().lower() != "websocket":
        return _upgrade_required(request)
    topics = _topics_to_start_with(request)
    limits = request.app[CLIENT_LIMITS]
    address = limits.address_of(request)
    if not limits.may_connect(address):
        raise TooManyRequests(
            f"more than {limits.connections} live-feed connections from this address",
            HEARTBEAT_RETRY_SECONDS,
        )
    # Counted from the handshake on: a client still to authenticate holds a connection too.
    limits.open_connections[address] += 1
    try:
        return await _serve(request, hub, tokens, since, topics)
    finally:
        limits.open_connections[address] -= 1
        if not limits.open_connections[address]:
            del limits.open_connections[address]


def _upgrade_required(request: web.Request) -> web.Response:
    """A plain GET of the feed: say it is a WebSocket (RFC 9110's 426), not just 400.
    A handshake that asks for the upgrade but is malformed still gets aiohttp's 400."""
    response = problem_response(
        426,
        "upgrade-required",
        "Upgrade required",
        f"{request.path} is a WebSocket: connect with a WebSocket client"
        " (ws://<host>/ws/live), which sends Upgrade: websocket",
        request,
    )
    # No `Connection: upgrade` with it: aiohttp's client would then switch a kept-alive
    # connection to the other protocol after this body, and misread the next answer.
    response.headers[hdrs.UPGRADE] = "websocket"
    return response


def _topics_to_start_with(request: web.Request) -> frozenset[str] | None:
    """`?topics=a,b`: what the client gets from its greeting on, its history included,
    as if its first message had subscribed to them; None without the parameter."""
    given = request[ARGUMENTS].text("topics")
    if given is None:
        return None
    topics = given.split(",")
    unknown = [t for t in topics if not _known_topic(request, t)]
    if unknown:
        raise InvalidParameter("topics", _unknown_topics(unknown))
    return frozenset(topics)


async def _serve(
    request: web.Request,
    hub: Hub,
    tokens_to_ask_for: tuple[str, ...],
    since: int,
    topics: frozenset[str] | None,
) -> web.WebSocketResponse:
    # No per-message compression: every client gets the same pre-encoded bytes.
    # autoping=False: protocol pings reach `_read`, so they count as activity
    # (clients such as the `websockets` package keep alive with them alone).
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=False, compress=False)
    await ws.prepare(request)
    transport = request.transport
    if not isinstance(transport, asyncio.WriteTransport):
        return ws  # the connection went away during the handshake
    client = hub.new_client(ws, transport)
    if topics is not None:
        client.subscribe(topics)
    if tokens_to_ask_for and not await _authenticate(ws, tokens_to_ask_for):
        return ws
    hub.attach(client, since if since >= 0 else None, _greeting(hub, client))
    reason = "client_closed"
    try:
        reason = await _read(hub, client, request)
    finally:
        hub.detach(client, reason)
        await hub.stop_sending(client)
    return ws


def _greeting(hub: Hub, client: Client) -> Frame:
    """connection_established, encoded. Built here, not in `_serve`, so the message and
    its lists are not kept for as long as the connection lasts (0.4 KiB of each idle
    connection's memory)."""
    greeting = ConnectionEstablished(
        timestamp=iso_time(time.time()),
        client_id=client.client_id,
        message="Connected to cryptomon live feed",
        position=hub.position,
        topics=sorted(client.topics),
        heartbeat_interval=hub.heartbeat_interval,
        opt_in_topics=list(OPT_IN_TOPICS),
        default_topics=list(DEFAULT_TOPICS),
        subscribing=SUBSCRIBING,
    )
    return Frame(0, CONTROL, None, encode(greeting))


async def _authenticate(ws: web.WebSocketResponse, tokens: tuple[str, ...]) -> bool:
    """The first message must be {"type": "auth", "token": ...} with one of `tokens`
    (the read token or the API token; see `authorization.feed_tokens`); protocol pings
    before it are answered (a few: a flood of them is no way to authenticate)."""
    message = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
            for _ in range(INBOUND_BURST):
                message = await ws.receive()
                if message.type == WSMsgType.PING:
                    await _pong(ws, message.data)
                elif message.type != WSMsgType.PONG:
                    break
    ok = False
    if message is not None and message.type == WSMsgType.TEXT:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            first = _decoder.decode(message.data)
            given = first.token if first.type == "auth" else None
            ok = given is not None and matches_any(given, tokens)
    if not ok:
        await ws.close(code=POLICY_VIOLATION, message=b"authentication required")
    return ok


async def _read(hub: Hub, client: Client, request: web.Request) -> str:
    """Handle what the client sends until it goes; the reason it went."""
    ws = client.ws
    allowance = float(INBOUND_BURST)
    refilled = time.monotonic()
    async for message in ws:
        now = time.monotonic()
        client.last_seen = now
        allowance = min(INBOUND_BURST, allowance + (now - refilled) * INBOUND_PER_SECOND)
        refilled = now
        if allowance < 1:
            await hub.close(client, POLICY_VIOLATION, "too_many_messages")
            return "too_many_messages"
        allowance -= 1
        # Protocol pings and pongs cost the allowance like any message (a keep-alive
        # every few seconds never runs it down; a flood does).
        if message.type == WSMsgType.PING:
            await _pong(ws, message.data)
            continue
        if message.type == WSMsgType.PONG:
            continue
        if message.type == WSMsgType.BINARY:
            await hub.close(client, WSCloseCode.UNSUPPORTED_DATA, "binary_frame")
            return "binary_frame"
        if message.type != WSMsgType.TEXT:
            break
        _handle(hub, client, request, message.data)
    # aiohttp overwrites close_code with the client's reply; the error keeps ours.
    error = ws.exception()
    if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
        return "message_too_big"
    return "client_closed"


async def _pong(ws: web.WebSocketResponse, data: bytes) -> None:
    """Answer a protocol ping (as aiohttp's autoping would), unless the socket is closing."""
    with contextlib.suppress(ConnectionError):
        await ws.pong(data)


def _handle(hub: Hub, client: Client, request: web.Request, text: str) -> None:
    try:
        message = _decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        hub.send_error(client, f"not a message this feed understands: {exc}")
        return
    match message.type:
        case "pong" | "ping" | "auth":
            return  # any message proves the client is alive
        case "subscribe" | "unsubscribe":
            topics = message.topics or []
            unknown = [t for t in topics if not _known_topic(request, t)]
            if unknown or not topics:
                hub.send_error(
                    client,
                    _unknown_topics(unknown)
                    if unknown
                    else f"{message.type} needs a non-empty list of topics",
                )
                return
            if message.type == "subscribe":
                client.subscribe(frozenset(topics))
            else:
                client.unsubscribe(frozenset(topics))
            reply = Subscribed(timestamp=iso_time(time.time()), topics=sorted(client.topics))
            hub.send(client, Frame(0, CONTROL, None, encode(reply)))
        case "resume":
            if message.since is None or message.since < 0:
                hub.send_error(client, "resume needs since: the last position you received")
                return
            hub.attach(client, message.since)
        case other:
            hub.send_error(
                client,
                f"unknown message type {other[:40]!r}; "
                "send subscribe, unsubscribe, resume, auth or pong",
            )


def _unknown_topics(unknown: list[str]) -> str:
    # Quoted briefly: a reply must not grow with what the client sent.
    return (
        f"unknown topics {[t[:40] for t in unknown[:5]]}; "
        f"topics are {', '.join(TOPICS)}, "
        f"or {PROVIDER_TOPIC_PREFIX}<name> for one provider"
    )


def _known_topic(request: web.Request, topic: str) -> bool:
    if topic in TOPICS:
        return True
    if topic.startswith(PROVIDER_TOPIC_PREFIX):
        name = topic.removeprefix(PROVIDER_TOPIC_PREFIX)
        return request.app[READ_MODELS].projections.providers.get(name) is not None
    return False


async def stats(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    connections = [
        ConnectionView(
            client_id=c.client_id,
            connected_at=iso_time(c.connected_at),
            last_ping=iso_time(c.last_ping),
            topics=sorted(c.topics),
            queue_depth=len(c.queue) + len(c.history),
            messages_sent=c.sent,
        )
        for c in hub.clients.values()
    ]
    body = WebSocketStats(
        active_connections=len(connections),
        connections=connections,
        background_tasks_running=hub.running,
        timestamp=iso_time(time.time()),
        messages_sent=hub.messages_sent,
        dropped=hub.dropped,
        disconnect_reasons=dict(hub.disconnects),
    )
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")


# The live feed's routes, declared as REST's are; the composition root routes both.
ENDPOINTS = (
    Endpoint("GET", "/ws/stats", stats, "Live feed connections", WebSocketStats),
    Endpoint(
        "GET",
        "/ws/live",
        live,
        "The live feed (WebSocket; ?since=<position> resumes; ?topics= replaces the default"
        " topics; with a token configured, the read token or the API token: ?token=, a"
        " bearer header or a first auth message)",
        None,
        (
            Param(
                "since",
                "query",
                "integer",
                "resume after this position",
                minimum=0,
                maximum=2**62,
                default=-1,
            ),
            Param(
                "topics",
                "query",
                "string",
                max_length=2000,
                description="comma-separated topics to get instead of the default ones, from"
                " the greeting on (a ?since= resume's history included)",
            ),
            Param(
                "token",
                "query",
                "string",
                max_length=500,
                description="the read token or the API token, when one is configured",
            ),
        ),
        errors=(400, 401),
        websocket=True,
    ),
)
