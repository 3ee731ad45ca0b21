"""Per-client limits: requests a second and live-feed connections per address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cryptomon.config import ConfigError, load_config
from cryptomon.http.limits import ClientLimits
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def app_with(tmp_path: Path, server: str, environ: dict[str, str] | None = None) -> web.Application:
    path = tmp_path / "limits.toml"
    path.write_text(f"providers = []\n[server]\n{server}\n")
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "limits.db", environ=environ or {}, probing=False
    )
    return create_app(settings)


async def test_a_client_past_its_rate_gets_429_with_retry_after(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(
        app_with(tmp_path, "requests_per_second = 0.5\nrequest_burst = 3")
    )
    statuses = [(await client.get("/api/status")).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = await client.get("/api/status")
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "requests a second" in (await refused.json())["detail"]


async def test_every_request_counts_unrouted_ones_and_cors_preflights_too(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    server = 'requests_per_second = 0.5\nrequest_burst = 3\ncors_origins = ["https://a.example"]'
    client = await aiohttp_client(app_with(tmp_path, server))
    preflight = {"Origin": "https://a.example", "Access-Control-Request-Method": "GET"}
    answers = [
        await client.options("/api/status", headers=preflight),
        await client.get("/nope"),
        await client.post("/api/status"),
        await client.options("/api/status", headers=preflight),
    ]
    assert [a.status for a in answers] == [200, 404, 405, 429]
    assert all(a.content_type == "application/problem+json" for a in answers[1:])
    assert answers[2].headers["Allow"]


@pytest.mark.parametrize(
    "request_line", ["GET /a%0Ab HTTP/1.1", "GET /a%0A HTTP/1.1", "OPTIONS * HTTP/1.1"]
)
async def test_targets_no_path_pattern_matches_are_counted_and_answered_as_problems(
    aiohttp_client: MakeClient, tmp_path: Path, request_line: str
) -> None:
    # Written by hand: a client library would not send these request lines.
    limited = "requests_per_second = 0.5\nrequest_burst = 1"
    client = await aiohttp_client(app_with(tmp_path, limited))
    answers = [await raw_request(client, request_line) for _ in range(2)]
    assert [status for status, _ in answers] == [404, 429]
    assert all("application/problem+json" in head for _, head in answers)


async def raw_request(client: Client, request_line: str) -> tuple[int, str]:
    """The status and header lines of one request written on its own connection."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(f"{request_line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(head.split(" ", 2)[1]), head


def test_each_address_has_its_own_bucket_and_buckets_refill() -> None:
    limits = ClientLimits(per_second=2.0, burst=2, connections=1)
    assert limits.wait_for_request("10.0.0.1", now=0.0) == 0
    assert limits.wait_for_request("10.0.0.1", now=0.0) == 0
    assert limits.wait_for_request("10.0.0.1", now=0.0) == pytest.approx(0.5)
    assert limits.wait_for_request("10.0.0.2", now=0.0) == 0  # another client is not affected
    assert limits.wait_for_request("10.0.0.1", now=0.6) == 0  # refilled
    assert limits.refused == 1


async def test_too_many_live_feed_connections_from_one_address_get_429(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(app_with(tmp_path, "websocket_connections_per_address = 2"))
    first = await client.ws_connect("/ws/live")
    second = await client.ws_connect("/ws/live")
    for ws in (first, second):
        assert (await ws.receive_json(timeout=5))["type"] == "connection_established"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws/live")
    assert refused.value.status == 429
    assert refused.value.headers is not None
    assert int(refused.value.headers["Retry-After"]) >= 1
    await first.close()
    deadline = time.monotonic() + 5
    while (await (await client.get("/ws/stats")).json())["active_connections"] != 1:
        assert time.monotonic() < deadline, "the closed connection was never released"
    third = await client.ws_connect("/ws/live")
    assert (await third.receive_json(timeout=5))["type"] == "connection_established"
    await third.close()
    await second.close()


async def test_connections_still_to_authenticate_count_against_the_limit(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    token = "t" * 32
    client = await aiohttp_client(
        app_with(tmp_path, "websocket_connections_per_address = 2",
                 environ={"CRYPTOMON_API_TOKEN": token})
    )  # fmt: skip
    # Handshakes done, auth messages not sent: each waits for its token and holds a place.
    waiting = [await client.ws_connect("/ws/live") for _ in range(2)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws/live")
    assert refused.value.status == 429
    await waiting[0].send_json({"type": "auth", "token": token})
    assert (await waiting[0].receive_json(timeout=5))["type"] == "connection_established"
    for ws in waiting:
        await ws.close()


def test_limits_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nrequests_per_second = 0\nrequest_burst = -1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "server.requests_per_second" in str(caught.value)
    assert "server.request_burst" in str(caught.value)


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(
        app_with(
            tmp_path,
            'requests_per_second = 0.1\nrequest_burst = 2\ntrusted_proxies = ["127.0.0.1"]',
        )
    )

    async def status_for(forwarded_for: str) -> int:
        headers = {"X-Forwarded-For": forwarded_for}
        return (await client.get("/api/status", headers=headers)).status

    assert [await status_for("203.0.113.1") for _ in range(3)] == [200, 200, 429]
    assert await status_for("203.0.113.2") == 200  # another client behind the same proxy
    # The nearest untrusted hop counts: what the client itself claims beyond it does not.
    assert await status_for("198.51.100.7, 203.0.113.1") == 429
    # A proxy may add its own header line after the client's: the last line counts.
    forged_then_added = [("X-Forwarded-For", "203.0.113.3"), ("X-Forwarded-For", "203.0.113.1")]
    assert (await client.get("/api/status", headers=forged_then_added)).status == 429


async def test_without_trusted_proxies_x_forwarded_for_buys_no_new_bucket(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(
        app_with(tmp_path, "requests_per_second = 0.1\nrequest_burst = 2")
    )
    statuses = [
        (await client.get("/api/status", headers={"X-Forwarded-For": f"203.0.113.{n}"})).status
        for n in range(3)
    ]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    ("server", "forwarded_for", "status"),
    [
        ("", None, 404),  # loopback, no proxy: allowed (the alert is unknown)
        ("", "127.0.0.1", 403),  # through a proxy nobody said to trust: not local
        ('trusted_proxies = ["127.0.0.1"]', "203.0.113.9", 403),  # a remote client
        ('trusted_proxies = ["127.0.0.1"]', "::1", 404),  # a local one, via the proxy
        # Written another way, the proxy's address is still the proxy's.
        ('trusted_proxies = ["::ffff:127.0.0.1"]', "::1", 404),
        # Only trusted hops: whom the proxy forwards for is unknown, so not local.
        ('trusted_proxies = ["127.0.0.1"]', "127.0.0.1", 403),
    ],
)
async def test_writes_without_a_token_never_come_through_a_proxy_from_elsewhere(
    aiohttp_client: MakeClient, tmp_path: Path, server: str, forwarded_for: str | None, status: int
) -> None:
    client = await aiohttp_client(app_with(tmp_path, server))
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = await client.post("/api/alerts/1/acknowledge", headers=headers)
    assert response.status == status, await response.text()


@pytest.mark.parametrize(
    ("server", "forwarded_for", "status"),
    [
        ("", None, 200),  # loopback, no proxy: the walk runs
        ("", "127.0.0.1", 403),
        ('trusted_proxies = ["127.0.0.1"]', "203.0.113.9", 403),
        ('trusted_proxies = ["127.0.0.1"]', "::1", 200),
    ],
)
async def test_a_fresh_walk_of_the_chain_is_a_write(
    aiohttp_client: MakeClient, tmp_path: Path, server: str, forwarded_for: str | None, status: int
) -> None:
    client = await aiohttp_client(app_with(tmp_path, server))
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = await client.post("/api/audit/verify", headers=headers)
    assert response.status == status, await response.text()
    if status == 200:
        assert (await response.json())["ok"] is True


async def test_a_forged_loopback_line_before_the_proxys_own_is_not_local(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(app_with(tmp_path, 'trusted_proxies = ["127.0.0.1"]'))
    headers = [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "203.0.113.9")]
    response = await client.post("/api/alerts/1/acknowledge", headers=headers)
    assert response.status == 403, await response.text()


def test_trusted_proxies_must_be_addresses(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\ntrusted_proxies = ["nginx"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "server.trusted_proxies" in str(caught.value)
    assert "'nginx' is not an IP address" in str(caught.value)
