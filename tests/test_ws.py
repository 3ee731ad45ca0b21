"""The live feed with real WebSocket clients against the real app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from feed import collect_until, receive_json
from standins import StandIn, closed_port

from cryptomon.config import load_config
from cryptomon.events.archive import archive_probe_events, segments
from cryptomon.events.log import EventLog
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import ProbeRecorded
from cryptomon.http.keys import HUB, READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app
from cryptomon.ws.handler import INBOUND_BURST
from cryptomon.ws.hub import Client as FeedClient

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


class Toggle:
    """A provider that is up or down as the test says."""

    def __init__(self) -> None:
        self.up = True
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, status=200 if self.up else 503)


@pytest.fixture
async def toggle() -> AsyncIterator[Toggle]:
    made = Toggle()
    app = web.Application()
    app.router.add_get("/ping", made.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    made.port = runner.addresses[0][1]
    yield made
    await runner.cleanup()


def config_text(toggle: Toggle, standin: StandIn, extra: str = "") -> str:
    return f"""
{extra}
[[providers]]
name = "Flappy"
category = "market_data"
base_url = "http://127.0.0.1:{toggle.port}"
health_path = "/ping"
interval = "1h"

[[providers]]
name = "Limited"
category = "exchanges"
base_url = "{standin.url("")}"
health_path = "/ratelimited"
interval = "1h"

[[providers]]
name = "Gone"
category = "news"
base_url = "http://127.0.0.1:{closed_port()}"
interval = "1h"
"""


@pytest.fixture
def make_app(tmp_path: Path, toggle: Toggle, standin: StandIn) -> Callable[..., web.Application]:
    def make(extra: str = "", environ: dict[str, str] | None = None) -> web.Application:
        path = tmp_path / "ws.toml"
        path.write_text(config_text(toggle, standin, extra))
        settings = Settings.from_config(
            load_config(path), database=tmp_path / "ws.db", environ=environ or {}, probing=False
        )
        return create_app(settings)

    return make


def provider_of(message: dict[str, Any]) -> str | None:
    for holder in (
        message,
        message.get("data", {}),
        message.get("event", {}),
        message.get("alert", {}),
        message.get("incident", {}),
    ):
        if "provider" in holder:
            provider: str = holder["provider"]
            return provider
    return None


async def trigger(client: Client, times: int = 1) -> None:
    for _ in range(times):
        response = await client.post("/api/scheduler/trigger/health_checks")
        assert response.status == 200, await response.text()


async def test_connection_established_then_the_seeds_message_set(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], toggle: Toggle
) -> None:
    client = await aiohttp_client(make_app())
    async with client.ws_connect("/ws/live") as ws:
        hello = await receive_json(ws)
        assert hello["type"] == "connection_established"
        assert hello["client_id"].startswith("client_")
        assert hello["position"] == client.app[STORE].head
        assert "alerts" in hello["topics"] and "providers" in hello["topics"]

        toggle.up = False
        await trigger(client, 3)
        went_down = await collect_until(
            ws,
            lambda seen: any(
                m["type"] == "provider_status_change"
                and m["provider"] == "Flappy"
                and m["new_status"] == "offline"
                for m in seen
            ),
        )
        types = {m["type"] for m in went_down}
        assert {"new_log_entry", "provider_status_change", "alert_raised"} <= types
        assert "rate_limit_alert" in types and "event" not in types
        limited = next(m for m in went_down if m["type"] == "rate_limit_alert")
        assert limited["provider"] == "Limited" and "percentage" in limited
        assert all("timestamp" in m for m in went_down)
        assert all(m["position"] > 0 for m in went_down if m["type"] != "subscribed")
        log_types = {m["log_type"] for m in went_down if m["type"] == "new_log_entry"}
        assert {"connection", "failure", "rate_limit"} <= log_types

        toggle.up = True
        await trigger(client, 2)
        came_back = await collect_until(
            ws,
            lambda seen: any(
                m["type"] == "alert_resolved"
                and m["alert"]["provider"] == "Flappy"
                and m["alert"]["kind"] == "offline"
                for m in seen
            ),
        )
        changes = [m for m in came_back if m["type"] == "provider_status_change"]
        assert any(m["provider"] == "Flappy" and m["new_status"] == "online" for m in changes)


async def test_status_updates_and_ws_stats_carry_their_fields(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], toggle: Toggle
) -> None:
    client = await aiohttp_client(make_app('[websocket]\nstatus_interval = "200ms"\n'))
    toggle.up = False
    await trigger(client, 3)  # Flappy goes offline: failures, an open alert
    async with client.ws_connect("/ws/live") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "unsubscribe", "topics": ["events"]})
        seen = await collect_until(
            ws,
            lambda s: (
                any(m["type"] == "status_update" for m in s)
                and any(m["type"] == "subscribed" for m in s)
            ),
        )
        update = next(m for m in seen if m["type"] == "status_update")
        metrics = update["system_metrics"]
        counts = ("online", "degraded", "offline", "rate_limited", "unconfigured", "unknown")
        assert sum(metrics[f"{c}_count"] for c in counts) == metrics["total_providers"] == 3
        assert metrics["offline_count"] >= 1
        assert metrics["probes_last_minute"] >= metrics["failures_last_minute"] >= 3
        assert metrics["open_alerts"] == update["alert_count"] >= 1
        assert metrics["event_position"] == update["position"] == client.app[STORE].head
        stats = await (await client.get("/ws/stats")).json()
    [connection] = stats["connections"]
    assert "events" not in connection["topics"]
    assert {"status", "alerts", "providers"} <= set(connection["topics"])
    assert connection["messages_sent"] >= len(seen) + 1  # the greeting too
    assert stats["messages_sent"] >= connection["messages_sent"]


async def test_acknowledging_reaches_the_feed(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], toggle: Toggle
) -> None:
    client = await aiohttp_client(make_app())
    toggle.up = False
    await trigger(client, 3)
    alerts = await (await client.get("/api/alerts?provider=Flappy")).json()
    offline = next(a for a in alerts["alerts"] if a["kind"] == "offline")
    async with client.ws_connect("/ws/live") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "subscribe", "topics": ["alerts"]})
        response = await client.post(
            f"/api/alerts/{offline['id']}/acknowledge", json={"actor": "al"}
        )
        assert response.status == 200
        seen = await collect_until(ws, lambda s: any(m["type"] == "alert_acknowledged" for m in s))
        acked = next(m for m in seen if m["type"] == "alert_acknowledged")
        assert acked["alert"]["acknowledged_by"] == "al"


async def test_topics_narrow_what_a_client_gets(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], toggle: Toggle
) -> None:
    client = await aiohttp_client(make_app())
    async with client.ws_connect("/ws/live") as ws:
        await receive_json(ws)
        topics = ["status", "providers", "alerts", "rate_limits", "events"]
        topics += ["logs.connection", "logs.failure", "logs.collection", "logs.rate_limit"]
        await ws.send_json({"type": "unsubscribe", "topics": topics})
        await ws.send_json({"type": "subscribe", "topics": ["provider:Gone"]})
        replies = await collect_until(ws, lambda s: len(s) == 2)
        assert [r["type"] for r in replies] == ["subscribed", "subscribed"]
        assert replies[-1]["topics"] == ["provider:Gone"]
        await trigger(client)
        seen = await collect_until(
            ws,
            lambda s: any(m["type"] == "new_log_entry" and m["log_type"] == "failure" for m in s),
        )
        assert {provider_of(m) for m in seen} == {"Gone"}


async def append_failures(store: EventLog, count: int) -> None:
    """`count` failed probes of Gone, one append each."""
    for n in range(count):
        event = ProbeRecorded("Gone", "health", "/", "failed", started_at=time.time() + n)
        await store.append("provider:Gone", [event])


async def test_resume_after_a_disconnect_has_no_gap_and_no_duplicate(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    app = client.app
    store = app[STORE]

    async with client.ws_connect("/ws/live?topics=events") as ws:
        await receive_json(ws)
        await append_failures(store, 5)
        first = await collect_until(ws, lambda s: sum(m["type"] == "event" for m in s) == 5)
        last_seen = max(m["position"] for m in first if m["type"] == "event")

    # Events keep arriving while the client reconnects.
    writer = asyncio.create_task(append_failures(store, 30))
    async with client.ws_connect(f"/ws/live?since={last_seen}&topics=events") as ws:
        hello = await receive_json(ws)
        assert hello["type"] == "connection_established"
        await writer
        await app[READ_MODELS].wait_for(store.head)
        seen = await collect_until(
            ws,
            lambda s: any(m["type"] == "event" and m["position"] == store.head for m in s),
        )
    positions = [m["position"] for m in seen if m["type"] == "event"]
    assert positions == list(range(last_seen + 1, store.head + 1))


async def test_a_resume_message_replays_from_its_position_with_no_gap_and_no_duplicate(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    store = client.app[STORE]

    async with client.ws_connect("/ws/live?topics=events") as ws:
        await receive_json(ws)
        await append_failures(store, 10)
        first = await collect_until(ws, lambda s: sum(m["type"] == "event" for m in s) == 10)
        since = [m["position"] for m in first if m["type"] == "event"][4]  # the fifth event
        # Asked again from an earlier position on the same connection, while events arrive.
        writer = asyncio.create_task(append_failures(store, 10))
        await ws.send_json({"type": "resume", "since": since})
        await writer
        await client.app[READ_MODELS].wait_for(store.head)
        again = await collect_until(
            ws, lambda s: any(m["type"] == "event" and m["position"] == store.head for m in s)
        )
    # What the resume replaced may still arrive before it; from the resume on, each once.
    positions = [m["position"] for m in again if m["type"] == "event"]
    start = len(positions) - 1 - positions[::-1].index(since + 1)
    assert positions[start:] == list(range(since + 1, store.head + 1))


async def archived_log(path: Path) -> int:
    """A log of 30 probe events, positions 1-20 archived out of the database; its head."""
    now = [1000.0]
    store = await EventStore.open(path, clock=lambda: now[0])
    for n in range(30):
        now[0] = 1000.0 + n
        event = ProbeRecorded("Gone", "health", "/", "failed", started_at=now[0])
        await store.append("provider:Gone", [event])
    assert await archive_probe_events(store, before=1020.0, up_to_position=store.head) == 20
    head = store.head
    await store.close()
    return head


async def test_resume_from_before_the_archive_sends_the_archived_events(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], tmp_path: Path
) -> None:
    archived_head = await archived_log(tmp_path / "ws.db")
    client = await aiohttp_client(make_app())  # a restart: the ring starts after them
    store = client.app[STORE]
    async with client.ws_connect("/ws/live?since=5&topics=events") as ws:
        assert (await receive_json(ws))["type"] == "connection_established"
        seen = await collect_until(
            ws,
            lambda s: (
                any(m["type"] == "resync" for m in s)
                and any(m["type"] == "event" and m["position"] == store.head for m in s)
            ),
        )
    positions = [m["position"] for m in seen if m["type"] == "event"]
    assert positions == list(range(6, store.head + 1))
    resync = next(m for m in seen if m["type"] == "resync")
    assert (resync["from_position"], resync["to_position"]) == (5, archived_head)
    assert "unsent" not in resync and "not sent" not in resync["message"]


async def test_resume_names_the_positions_an_unreadable_archive_kept_back(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], tmp_path: Path
) -> None:
    archived_head = await archived_log(tmp_path / "ws.db")
    client = await aiohttp_client(make_app())
    [(_first, _last, segment)] = segments(tmp_path / "ws.db")
    segment.write_bytes(b"not gzip")  # after the read models have folded it
    async with client.ws_connect("/ws/live?since=5&topics=events") as ws:
        assert (await receive_json(ws))["type"] == "connection_established"
        seen = await collect_until(ws, lambda s: any(m["type"] == "resync" for m in s))
    resync = seen[-1]
    assert resync["unsent"] == [[6, archived_head]]
    assert f"6-{archived_head}: not sent" in resync["message"]
    assert not [m for m in seen if m["type"] == "event" and m["position"] <= archived_head]


async def test_a_slow_client_is_dropped_while_a_fast_one_keeps_up(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    hub = client.app[HUB]
    hub.max_queue = 400  # more than one burst between the read models' yields
    store = client.app[STORE]
    async with (
        client.ws_connect("/ws/live?topics=events") as fast,
        client.ws_connect("/ws/live?topics=events") as slow,
    ):
        await receive_json(fast)
        received = 0

        async def read_fast() -> None:
            nonlocal received
            async for message in fast:
                if json.loads(message.data)["type"] == "event":
                    received += 1
                    if received == 4000:
                        return

        reader = asyncio.create_task(read_fast())
        padding = "p" * 2000
        for batch in range(40):  # far more than the slow client's buffers hold
            events = [
                ProbeRecorded("Gone", "health", padding, "failed", started_at=float(batch))
            ] * 100
            await store.append("provider:Gone", events)
        await asyncio.wait_for(reader, 20)
        assert received == 4000
        closed = await collect_closed(slow)
        assert closed == 1013
        stats = await (await client.get("/ws/stats")).json()
        assert stats["dropped"] >= 1
        assert stats["disconnect_reasons"].get("queue_overflow") == 1


async def collect_closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        message = await asyncio.wait_for(ws.receive(), deadline - time.monotonic())
        if message.type == WSMsgType.CLOSE:
            code: int = message.data
            return code
        if message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code
    return None


async def test_a_silent_client_is_disconnected_after_two_heartbeats(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    hub = client.app[HUB]
    async with client.ws_connect("/ws/live", autoping=False) as ws:
        await receive_json(ws)
        hub.heartbeat()
        ping = await collect_until(ws, lambda s: any(m["type"] == "ping" for m in s))
        assert ping[-1]["type"] == "ping"
        later = time.monotonic() + 2 * hub.heartbeat_interval + 1
        hub.heartbeat(now=lambda: later)
        assert await collect_closed(ws) == 1001
    stats = await (await client.get("/ws/stats")).json()
    assert stats["disconnect_reasons"]["heartbeat_timeout"] == 1


async def test_protocol_pings_and_pongs_keep_a_client_connected(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    """A client that keeps alive with WebSocket pings (the `websockets` package's way)
    or unsolicited pongs, never a JSON pong, stays past two heartbeat intervals and
    gets its pongs; one that sends nothing is still closed."""
    # 500 ms: long enough that a stalled test loop doesn't look like a silent client.
    client = await aiohttp_client(make_app('[websocket]\nheartbeat_interval = "500ms"\n'))
    url = f"ws://127.0.0.1:{client.port}/ws/live"
    heartbeats = 4  # the keep-alive clients must outlast this many intervals

    async def ping_on_each_heartbeat() -> int:
        pongs = 0
        async with websockets.connect(url, ping_interval=None) as ws:
            assert json.loads(await ws.recv())["type"] == "connection_established"
            while pongs < heartbeats:
                if json.loads(await ws.recv())["type"] == "ping":
                    pong = await ws.ping()  # a protocol PING, never a JSON pong
                    await asyncio.wait_for(pong, 5)  # resolved by the server's PONG
                    pongs += 1
        return pongs

    async def pong_on_each_heartbeat() -> int:
        pings = 0
        async with client.ws_connect("/ws/live") as ws:
            await receive_json(ws)
            while pings < heartbeats:
                if (await receive_json(ws))["type"] == "ping":
                    await ws.pong(b"still here")
                    pings += 1
            assert not ws.closed
        return pings

    pinger = asyncio.create_task(ping_on_each_heartbeat())
    ponger = asyncio.create_task(pong_on_each_heartbeat())
    async with client.ws_connect("/ws/live") as silent:
        await receive_json(silent)
        assert await collect_closed(silent) == 1001
    assert await asyncio.wait_for(asyncio.gather(pinger, ponger), 20) == [heartbeats] * 2
    stats = await (await client.get("/ws/stats")).json()
    assert stats["disconnect_reasons"] == {"heartbeat_timeout": 1, "client_closed": 2}


async def test_a_flood_of_protocol_pings_is_closed_like_a_flood_of_messages(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    async with client.ws_connect("/ws/live") as ws:
        await receive_json(ws)
        for _ in range(INBOUND_BURST + 100):
            await ws.ping()
        assert await collect_closed(ws) == 1008
    stats = await (await client.get("/ws/stats")).json()
    assert stats["disconnect_reasons"] == {"too_many_messages": 1}


async def test_bad_messages_get_errors_and_the_connection_stays(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    async with client.ws_connect("/ws/live") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "unsubscribe", "topics": ["status"]})
        await receive_json(ws)
        for bad in (
            "not json at all",
            json.dumps({"type": "subscribe", "topics": ["weather"]}),
            json.dumps({"type": "dance"}),
            json.dumps({"type": "subscribe", "topics": "alerts"}),
            json.dumps({"type": "resume"}),
            json.dumps({"type": "subscribe", "topics": ["provider:Nobody"]}),
        ):
            await ws.send_str(bad)
            reply = await receive_json(ws)
            assert reply["type"] == "error", (bad, reply)
            assert reply["message"]
        await ws.send_json({"type": "pong"})
        await ws.send_json({"type": "subscribe", "topics": ["alerts"]})
        assert (await receive_json(ws))["type"] == "subscribed"


async def test_binary_and_oversized_messages_close_with_the_right_code(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    async with client.ws_connect("/ws/live") as ws:
        await receive_json(ws)
        await ws.send_bytes(b"\x00\x01")
        assert await collect_closed(ws) == 1003
    async with client.ws_connect("/ws/live") as ws:
        await receive_json(ws)
        await ws.send_str("x" * (128 * 1024))
        assert await collect_closed(ws) == 1009


async def test_the_feed_requires_the_token_when_one_is_configured(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app(environ={"CRYPTOMON_API_TOKEN": "feed-token-123"}))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws/live?token=wrong")
    assert refused.value.status == 401
    async with client.ws_connect("/ws/live?token=feed-token-123") as ws:
        assert (await receive_json(ws))["type"] == "connection_established"
    async with client.ws_connect("/ws/live") as ws:
        await ws.send_json({"type": "auth", "token": "feed-token-123"})
        assert (await receive_json(ws))["type"] == "connection_established"
    async with client.ws_connect("/ws/live") as ws:
        await ws.send_json({"type": "auth", "token": "nope"})
        assert await collect_closed(ws) == 1008


async def test_shutdown_closes_every_socket_with_going_away(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    ws = await client.ws_connect("/ws/live")
    await receive_json(ws)
    await client.app.shutdown()
    assert await collect_closed(ws) == 1001
    await ws.close()


SEED_PYTHON_CLIENT = """
import asyncio
import contextlib
import websockets
import json

async def websocket_client():
    uri = "ws://localhost:7860/ws/live"

    async with websockets.connect(uri) as websocket:
        while True:
            message = await websocket.recv()
            data = json.loads(message)

            if data['type'] == 'status_update':
                print(f"Status: {data['system_metrics']}")

            elif data['type'] == 'ping':
                # Respond with pong
                await websocket.send(json.dumps({'type': 'pong'}))

asyncio.run(websocket_client())
"""


async def test_the_seed_python_client_works_unchanged(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app('[websocket]\nstatus_interval = "200ms"\n'))
    port = client.port
    code = SEED_PYTHON_CLIENT.replace("localhost:7860", f"127.0.0.1:{port}")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line.startswith(b"Status: {"), line
        assert b"'total_providers': 3" in line
    finally:
        process.kill()
        await process.wait()


# ---- the flush: fast path and queue --------------------------------------------------


class FakeTransport:
    """Records what is written; its buffer is as full as the test says."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


class FakeSocket:
    closed = False

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed = True


def messages_in(wire: bytes | bytearray) -> list[dict[str, Any]]:
    """Decode the server's unmasked text frames."""
    found = []
    at = 0
    while at < len(wire):
        length, at = wire[at + 1] & 0x7F, at + 2
        if length == 126:
            length, at = int.from_bytes(wire[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(wire[at : at + 8], "big"), at + 8
        found.append(json.loads(wire[at : at + length]))
        at += length
    return found


def event_positions(transport: FakeTransport) -> list[int]:
    return [m["position"] for m in messages_in(transport.written) if m["type"] == "event"]


async def test_order_holds_across_the_fast_path_and_the_queue(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    """A client whose socket buffer fills gets frames queued; while anything is queued,
    new frames go behind it, and once it is drained the shared writes resume: every
    event once, in order."""
    client = await aiohttp_client(make_app())
    app = client.app
    hub, store, models = app[HUB], app[STORE], app[READ_MODELS]
    hub.flush()
    hub.flush_seconds = 3600.0  # flushes happen when the test says
    transport = FakeTransport()
    fake = hub.new_client(FakeSocket(), transport)  # type: ignore[arg-type]
    fake.subscribe(frozenset({"events"}))
    hub.attach(fake, None)

    async def publish(count: int) -> None:
        for _ in range(count):
            event = ProbeRecorded("Gone", "health", "/", "failed", started_at=time.time())
            await store.append("provider:Gone", [event])
        await models.wait_for(store.head)

    start = store.head
    await publish(3)
    hub.flush()
    assert event_positions(transport) == [start + 1, start + 2, start + 3]
    assert fake.sender is None or fake.sender.done()  # nothing waited: no sender needed

    transport.buffered = 2 << 20  # not reading: past the high-water mark
    await publish(3)
    hub.flush()
    assert len(event_positions(transport)) == 3
    queued = [f.position for f in fake.queue if f.topic == "events"]
    assert queued == [start + 4, start + 5, start + 6]
    assert fake.sender is not None and not fake.sender.done()  # waiting for the drain

    await publish(1)  # pending until the flush below
    transport.buffered = 0  # reading again, but the queue has not been sent yet
    hub.flush()
    assert len(event_positions(transport)) == 3, "a new frame must not overtake the queue"
    assert fake.queue[-1].position == start + 7

    await idle(fake)
    await publish(1)
    hub.flush()
    assert event_positions(transport) == list(range(start + 1, start + 9))
    assert fake.sent == len(messages_in(transport.written))
    await hub.stop_sending(fake)


async def idle(client: FeedClient) -> None:
    """Until the hub's sender has delivered everything waiting for the client and stopped."""
    while client.queue or client.history or (client.sender and not client.sender.done()):  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def test_a_client_attaching_between_flushes_gets_each_event_once(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    """Frames published but not yet flushed are already in the ring (and in the greeting's
    position): a client attached then gets them from its history or not at all, never twice."""
    client = await aiohttp_client(make_app())
    app = client.app
    hub, store, models = app[HUB], app[STORE], app[READ_MODELS]
    hub.flush()
    hub.flush_seconds = 3600.0
    before = store.head
    for n in range(4):
        event = ProbeRecorded("Gone", "health", "/", "failed", started_at=time.time() + n)
        await store.append("provider:Gone", [event])
    await models.wait_for(store.head)
    assert hub.pending  # published, not flushed yet

    fresh, resuming = FakeTransport(), FakeTransport()
    fakes = []
    for transport, since in ((fresh, None), (resuming, before)):
        fake = hub.new_client(FakeSocket(), transport)  # type: ignore[arg-type]
        fake.subscribe(frozenset({"events"}))
        hub.attach(fake, since)
        fakes.append(fake)
    hub.flush()
    event = ProbeRecorded("Gone", "health", "/", "failed", started_at=time.time())
    await store.append("provider:Gone", [event])
    await models.wait_for(store.head)
    hub.flush()
    for fake in fakes:
        await idle(fake)
    assert event_positions(fresh) == [store.head]
    assert event_positions(resuming) == list(range(before + 1, store.head + 1))


async def test_nothing_is_written_after_a_close_frame(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    app = client.app
    hub, store, models = app[HUB], app[STORE], app[READ_MODELS]
    transport = FakeTransport()
    closed = FakeSocket()
    fake = hub.new_client(closed, transport)  # type: ignore[arg-type]
    hub.attach(fake, None)
    hub.flush()
    closed.closed = True  # the client's close frame came in; the handler has not detached it yet
    event = ProbeRecorded("Gone", "health", "/", "failed", started_at=time.time())
    await store.append("provider:Gone", [event])
    await models.wait_for(store.head)
    hub.flush()
    assert transport.written == b"" and not fake.queue


async def test_a_judgement_reaches_the_feed_as_its_status_change_and_alert(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    """A node on the wrong chain: the judgement itself has no message; the status change
    and the alert it causes do, and the feed goes on."""
    node = """
[chains.solo]
chain_id = 1

[[providers]]
name = "Node"
category = "rpc_nodes"
base_url = "https://rpc.example.com"
interval = "1h"
rpc = [{ method = "eth_blockNumber" }, { method = "eth_chainId" }]
observe = { head = "[BODY][0].result", chain_id = "[BODY][1].result" }
chain = "solo"
"""
    client = await aiohttp_client(make_app(node))
    store = client.app[STORE]
    async with client.ws_connect("/ws/live") as ws:
        await receive_json(ws)
        for n in range(2):  # two good probes: online
            probe = ProbeRecorded(
                "Node", "health", "/", "success", started_at=time.time() + n,
                observations={"head": 100 + n, "chain_id": 1},
            )  # fmt: skip
            await store.append("provider:Node", [probe])
        wrong = ProbeRecorded(
            "Node", "health", "/", "success", started_at=time.time() + 2,
            observations={"head": 102, "chain_id": 56},
        )  # fmt: skip
        await store.append("provider:Node", [wrong])
        seen = await collect_until(
            ws, lambda s: any(m["type"] == "alert_raised" for m in s), within=10
        )
        (raised,) = [m for m in seen if m["type"] == "alert_raised"]
        assert raised["alert"]["kind"] == "wrong_chain"
        changes = [m for m in seen if m["type"] == "provider_status_change"]
        assert changes[-1]["new_status"] == "degraded"
        assert changes[-1]["details"].startswith("wrong chain: answers chain id 56")
        await append_failures(store, 1)  # the feed is still there
        await collect_until(ws, lambda s: any(provider_of(m) == "Gone" for m in s))


# ---- topics: the default set, opt-in topics, subscribing, resuming each ----------------

# What a client gets without subscribing, as connection_established lists it (sorted).
DEFAULT_TOPICS = [
    "alerts", "logs.collection", "logs.connection", "logs.failure", "logs.rate_limit",
    "providers", "rate_limits", "status",
]  # fmt: skip
OPT_IN_TOPICS = ["events", "chains", "quotes", "heads"]
OPT_IN_TYPES = {"event", "chain_state_change", "quote_deviation", "head_update"}
# Messages not from an event, or sent whatever the topics: not compared between clients.
UNCOMPARED = {"status_update", "ping", "subscribed", "connection_established"}


def solo_node() -> str:
    """A node of its own chain, never reachable: its heads come from appended probes."""
    return f"""
[chains.solo]
chain_id = 1

[[providers]]
name = "Node"
category = "rpc_nodes"
base_url = "http://127.0.0.1:{closed_port()}"
interval = "1h"
rpc = [{{ method = "eth_blockNumber" }}, {{ method = "eth_chainId" }}]
observe = {{ head = "[BODY][0].result", chain_id = "[BODY][1].result" }}
chain = "solo"
"""


async def node_probes(store: EventLog) -> None:
    """Node's head moves twice, then it answers another chain: head_update frames,
    and a chain_state_change (wrong_chain) with the status change and alert it causes."""
    for n, chain_id in enumerate((1, 1, 56)):
        probe = ProbeRecorded(
            "Node", "health", "/", "success", started_at=time.time() + n,
            observations={"head": 100 + n, "chain_id": chain_id},
        )  # fmt: skip
        await store.append("provider:Node", [probe])


def compared(messages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(m["type"], m["position"]) for m in messages if m["type"] not in UNCOMPARED]


def until_ping(seen: list[dict[str, Any]]) -> bool:
    return any(m["type"] == "ping" for m in seen)


async def everything_then_a_ping(client: Client, toggle: Toggle) -> None:
    """Every kind of message the service has, then a ping after all of them (the hub
    sends a ping to every client, behind what was published before it)."""
    app = client.app
    now = time.time()
    window = {
        "name": "upgrade",
        "providers": ["Gone"],
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
    }
    response = await client.post("/api/maintenance", json=window)
    assert response.status == 201, await response.text()
    toggle.up = False
    # Flappy goes offline (its alert and incident), Limited is rate-limited, Gone's
    # probe falls in the window (maintenance_window).
    await trigger(client, 3)
    await node_probes(app[STORE])
    await app[READ_MODELS].wait_for(app[STORE].head)
    app[HUB].heartbeat()


async def test_a_client_that_subscribes_to_nothing_gets_the_default_set_and_no_events(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], toggle: Toggle
) -> None:
    often = '[websocket]\nstatus_interval = "200ms"\n'
    client = await aiohttp_client(make_app(often + solo_node()))
    every_topic = ",".join(DEFAULT_TOPICS + OPT_IN_TOPICS)
    async with (
        client.ws_connect("/ws/live") as plain,
        client.ws_connect(f"/ws/live?topics={every_topic}") as every,
    ):
        hello = await receive_json(plain)
        assert hello["topics"] == DEFAULT_TOPICS == sorted(hello["default_topics"])
        assert hello["opt_in_topics"] == OPT_IN_TOPICS
        assert "first subscribe" in hello["subscribing"] and "replaces" in hello["subscribing"]
        assert (await receive_json(every))["topics"] == sorted(DEFAULT_TOPICS + OPT_IN_TOPICS)
        await everything_then_a_ping(client, toggle)
        got = await collect_until(
            plain, lambda s: until_ping(s) and any(m["type"] == "status_update" for m in s)
        )
        all_of_it = await collect_until(every, until_ping)

    types = {m["type"] for m in got}
    assert {
        "status_update", "provider_status_change", "rate_limit_alert", "new_log_entry",
        "alert_raised", "incident_opened", "maintenance_window", "ping",
    } <= types  # fmt: skip
    assert not OPT_IN_TYPES & types
    assert OPT_IN_TYPES - {"quote_deviation"} <= {m["type"] for m in all_of_it}
    # The same messages in the same order as a client on every topic, less the opt-in ones.
    assert compared(got) == [m for m in compared(all_of_it) if m[0] not in OPT_IN_TYPES]
    assert (
        sum(m["type"] == "event" for m in all_of_it) == client.app[STORE].head - hello["position"]
    )


async def test_the_first_subscribe_replaces_the_default_set_and_later_ones_add(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], toggle: Toggle
) -> None:
    client = await aiohttp_client(make_app())

    async def subscription(ws: aiohttp.ClientWebSocketResponse, message: Any) -> list[str]:
        await ws.send_json(message)
        seen = await collect_until(ws, lambda s: any(m["type"] == "subscribed" for m in s))
        topics: list[str] = seen[-1]["topics"]
        return topics

    async with (
        client.ws_connect("/ws/live") as replaced,
        client.ws_connect("/ws/live") as narrowed,
        client.ws_connect("/ws/live?topics=alerts") as chosen,
    ):
        await receive_json(replaced)
        await receive_json(narrowed)
        assert (await receive_json(chosen))["topics"] == ["alerts"]
        subscribe = {"type": "subscribe", "topics": ["alerts"]}
        assert await subscription(replaced, subscribe) == ["alerts"]
        subscribe = {"type": "subscribe", "topics": ["events"]}
        assert await subscription(replaced, subscribe) == ["alerts", "events"]
        # An unsubscribe before any subscribe narrows the default set, which stays.
        unsubscribe = {"type": "unsubscribe", "topics": ["status", "rate_limits"]}
        left = sorted(set(DEFAULT_TOPICS) - {"status", "rate_limits"})
        assert await subscription(narrowed, unsubscribe) == left
        assert await subscription(narrowed, subscribe) == sorted([*left, "events"])
        # ?topics= counts as the first subscribe.
        assert await subscription(chosen, subscribe) == ["alerts", "events"]
        stats = await (await client.get("/ws/stats")).json()
        assert sorted(c["topics"] for c in stats["connections"]) == sorted(
            [["alerts", "events"], ["alerts", "events"], sorted([*left, "events"])]
        )

        toggle.up = False
        await trigger(client, 3)
        await client.app[READ_MODELS].wait_for(client.app[STORE].head)
        client.app[HUB].heartbeat()
        got = await collect_until(replaced, until_ping)
        also = await collect_until(chosen, until_ping)
        more = await collect_until(narrowed, until_ping)
    # Alerts (and their incidents) and events, nothing of the default set.
    types = {m["type"] for m in got}
    assert {"event", "alert_raised", "incident_opened", "ping"} <= types
    assert all(t in {"event", "ping"} or t.startswith(("alert_", "incident_")) for t in types)
    assert compared(also) == compared(got)
    assert {"event", "new_log_entry", "provider_status_change"} <= {m["type"] for m in more}
    assert "rate_limit_alert" not in {m["type"] for m in more}


async def test_a_provider_topic_carries_its_raw_events_only_with_events(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], toggle: Toggle
) -> None:
    client = await aiohttp_client(make_app())
    async with (
        client.ws_connect("/ws/live?topics=provider:Flappy") as flappy,
        client.ws_connect("/ws/live?topics=provider:Flappy,events") as with_events,
    ):
        await receive_json(flappy)
        first = (await receive_json(with_events))["position"]
        toggle.up = False
        await trigger(client, 3)
        await client.app[READ_MODELS].wait_for(client.app[STORE].head)
        client.app[HUB].heartbeat()
        about_flappy = await collect_until(flappy, until_ping)
        everything = await collect_until(with_events, until_ping)
    types = {m["type"] for m in about_flappy}
    assert {"new_log_entry", "provider_status_change", "alert_raised", "incident_opened"} <= types
    assert "event" not in types
    assert {provider_of(m) for m in about_flappy if m["type"] != "ping"} == {"Flappy"}
    # With `events`, every stored event as well (`events` is all of them).
    events = [m for m in everything if m["type"] == "event"]
    assert [m["position"] for m in events] == list(range(first + 1, client.app[STORE].head + 1))
    assert {"Flappy", "Limited", "Gone"} <= {provider_of(m) for m in events}
    assert compared(about_flappy) == [m for m in compared(everything) if m[0] != "event"]


async def test_a_resume_gets_what_each_topic_got_live(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], toggle: Toggle
) -> None:
    """From the ring, by ?since= with ?topics= or by a resume message: the messages a
    client on those topics got live, each once, in the same order."""
    client = await aiohttp_client(make_app(solo_node()))
    app = client.app
    choices = [None, "events", "alerts", "logs.failure", "provider:Node", "provider:Gone,events"]

    def query(topics: str | None) -> str:
        return "" if topics is None else f"topics={topics}"

    live: dict[str | None, list[tuple[str, int]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        sockets = {
            topics: await stack.enter_async_context(client.ws_connect(f"/ws/live?{query(topics)}"))
            for topics in choices
        }
        [start] = {(await receive_json(ws))["position"] for ws in sockets.values()}
        await everything_then_a_ping(client, toggle)
        for topics, ws in sockets.items():
            live[topics] = compared(await collect_until(ws, until_ping))
    assert all(live.values())
    assert "head_update" in {t for t, _ in live["provider:Node"]}  # live only, never resumed
    live["provider:Node"] = [m for m in live["provider:Node"] if m[0] != "head_update"]

    async def resumed(ws: aiohttp.ClientWebSocketResponse, expected: int) -> list[dict[str, Any]]:
        seen = await collect_until(ws, lambda s: len(compared(s)) >= expected)
        app[HUB].heartbeat()  # behind the history: nothing more may come before it
        return seen + await collect_until(ws, until_ping)

    for topics in choices:
        path = f"/ws/live?since={start}&{query(topics)}"
        async with client.ws_connect(path) as ws:
            assert compared(await resumed(ws, len(live[topics]))) == live[topics], topics
        async with client.ws_connect(f"/ws/live?{query(topics)}") as ws:
            await receive_json(ws)
            await ws.send_json({"type": "resume", "since": start})
            assert compared(await resumed(ws, len(live[topics]))) == live[topics], topics


async def test_a_resume_from_the_log_sends_the_default_clients_log_entries(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application], tmp_path: Path
) -> None:
    """Older than the ring (archived too): the log entries are derived from the log again,
    and no raw event goes to a client that did not ask for them."""
    await archived_log(tmp_path / "ws.db")
    client = await aiohttp_client(make_app())
    async with client.ws_connect("/ws/live?since=5") as ws:
        assert (await receive_json(ws))["type"] == "connection_established"
        seen = await collect_until(ws, lambda s: any(m["type"] == "resync" for m in s))
    entries = [(m["position"], m["log_type"]) for m in seen if m["type"] == "new_log_entry"]
    # Each of the 30 failed probes (6 to 30 after 5) is a connection row and a failure row.
    assert entries == [(p, kind) for p in range(6, 31) for kind in ("connection", "failure")]
    assert not [m for m in seen if m["type"] == "event"]


async def test_topics_on_connecting_are_checked(
    aiohttp_client: MakeClient, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    for bad in ("weather", "events,", "provider:Nobody", "alerts,provider:"):
        response = await client.get(f"/ws/live?topics={bad}", headers=upgrade)
        assert response.status == 400, (bad, await response.text())
        problem = await response.json(content_type=None)
        assert problem["parameter"] == "topics", problem
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws/live?topics=weather")
    assert refused.value.status == 400
    async with client.ws_connect("/ws/live?topics=provider:Gone,status") as ws:
        assert (await receive_json(ws))["topics"] == ["provider:Gone", "status"]
