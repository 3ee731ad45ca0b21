"""The optional read token (`[server] read_token_env`): through the app, and through
`python -m cryptomon serve` in a subprocess.

The walks read `ENDPOINTS` itself, so a route added later is covered without touching
this file: every read needs a token unless the table opens it, and no read token writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from standins import closed_port

from cryptomon.config import ConfigError, load_config
from cryptomon.http.authorization import anyone
from cryptomon.http.routes import Endpoint
from cryptomon.http.settings import Settings
from cryptomon.service.app import ENDPOINTS, create_app

Client = TestClient[web.Request, web.Application]
READ = "read-token-5f2c"
WRITE = "write-token-9ab1"
ENVIRON = {"CM_READ": READ, "CRYPTOMON_API_TOKEN": WRITE}
SERVER = '[server]\nread_token_env = "CM_READ"\n'
BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"
PRIVATE = [e for e in ENDPOINTS if not e.write and not e.websocket and e.exemption is not anyone]
WRITES = [e for e in ENDPOINTS if e.write]


def config_text(server: str = SERVER) -> str:
    return (
        f'{server}[[providers]]\nname = "Up"\ncategory = "news"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1h"\n'
    )


def settings_for(tmp_path: Path, text: str, environ: dict[str, str]) -> Settings:
    path = tmp_path / "read.toml"
    path.write_text(text)
    return Settings.from_config(
        load_config(path), database=tmp_path / "read.db", environ=environ, probing=False
    )


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(settings_for(tmp_path, config_text(), ENVIRON)))


def concrete(endpoint: Endpoint) -> str:
    """The route's path with each path parameter filled in (the check comes first)."""
    return re.sub(r"\{([^}]+)\}", lambda m: "24h" if m[1] == "window" else "Up", endpoint.path)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_table_has_reads_behind_the_token_and_open_ones() -> None:
    assert {e.path for e in PRIVATE} >= {"/api/providers", "/api/events", "/metrics", "/info"}
    assert "/ws/stats" in {e.path for e in PRIVATE}
    opened = {e.path for e in ENDPOINTS if e.exemption is anyone}
    assert opened >= {"/health", "/livez", "/readyz", "/openapi.json", "/docs"}
    assert {p for p in opened if p.startswith("/badge/")} == {
        "/badge/{name}/status.svg",
        "/badge/{name}/uptime/{window}.svg",
        "/badge/{name}/latency.svg",
    }


async def test_every_read_without_a_token_or_with_a_wrong_one_is_refused_with_401(
    client: Client,
) -> None:
    for endpoint in PRIVATE:
        for headers in ({}, bearer(READ + "x"), {"Authorization": f"Basic {READ}"}):
            async with client.get(concrete(endpoint), headers=headers) as response:
                body = await response.text()
                assert response.status == 401, (endpoint.path, headers, body)
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="cryptomon"'
                assert response.content_type == "application/problem+json"
            assert READ not in body and WRITE not in body  # never echoed
    # The JSON answer of / is a read like the others; the page is open (it asks).
    async with client.get("/", headers={"Accept": "application/json"}) as response:
        assert response.status == 401


async def test_the_read_token_and_the_api_token_both_read(client: Client) -> None:
    for endpoint in PRIVATE:
        for token in (READ, WRITE):
            async with client.get(concrete(endpoint), headers=bearer(token)) as response:
                assert response.status not in (401, 403), (endpoint.path, await response.text())
    async with client.get("/api/providers", headers=bearer(READ)) as response:
        assert [p["name"] for p in (await response.json())["providers"]] == ["Up"]
    async with client.get("/api/config/stats", headers=bearer(READ)) as response:
        assert (await response.json())["read_token_configured"] is True


async def test_an_answer_in_the_cache_is_no_way_around_the_token(client: Client) -> None:
    async with client.get("/api/providers", headers=bearer(READ)) as response:
        assert response.status == 200
    async with client.get("/api/providers") as response:  # within the cache's second
        assert response.status == 401


async def test_the_read_token_never_writes(client: Client) -> None:
    for endpoint in WRITES:
        async with client.request(
            endpoint.method, concrete(endpoint), headers=bearer(READ)
        ) as response:
            assert response.status == 403, (endpoint.path, await response.text())
            problem = await response.json()
            assert problem["type"] == "/problems/insufficient-scope"
            assert "CRYPTOMON_API_TOKEN" in problem["detail"] and READ not in problem["detail"]
            assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    async with client.post("/api/scheduler/trigger/health_checks", headers=bearer(WRITE)) as ok:
        assert ok.status == 200


async def test_the_open_routes_need_no_token(client: Client) -> None:
    for path in ("/health", "/livez", "/readyz", "/openapi.json", "/docs"):
        async with client.get(path) as response:
            assert response.status == 200, path
    for path in ("/badge/Up/status.svg", "/badge/Up/uptime/7d.svg", "/badge/Up/latency.svg"):
        async with client.get(path) as response:
            assert (response.status, response.content_type) == (200, "image/svg+xml"), path
    async with client.get("/badge/Nobody/status.svg") as response:
        assert response.status == 404  # the grey badge, not a 401
    async with client.get("/", headers={"Accept": BROWSER}) as response:
        assert (response.status, response.content_type) == (200, "text/html")
    for name in ("dashboard.js", "dashboard.css", "favicon.svg"):
        async with client.get(f"/static/{name}") as response:
            assert response.status == 200, name
    async with client.get("/status") as response:
        assert response.status != 401  # the public status page, once it is built


async def test_the_feed_takes_either_token_and_refuses_the_rest(client: Client) -> None:
    async def greeted(ws: aiohttp.ClientWebSocketResponse) -> bool:
        message = await ws.receive(timeout=5)
        return message.type == aiohttp.WSMsgType.TEXT and (
            json.loads(message.data)["type"] == "connection_established"
        )

    for token in (READ, WRITE):
        async with client.ws_connect(f"/ws/live?token={token}") as ws:
            assert await greeted(ws)
        async with client.ws_connect("/ws/live", headers=bearer(token)) as ws:
            assert await greeted(ws)
        async with client.ws_connect("/ws/live") as ws:  # a browser: the first message
            await ws.send_json({"type": "auth", "token": token})
            assert await greeted(ws)
    for url, headers in (("/ws/live?token=nope", {}), ("/ws/live", bearer(READ + "x"))):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(url, headers=headers)
        assert refused.value.status == 401
    for first in ({"type": "subscribe", "topics": ["alerts"]}, {"type": "auth", "token": "x"}):
        async with client.ws_connect("/ws/live") as ws:
            await ws.send_json(first)
            message = await ws.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1008, first


async def test_the_document_says_which_reads_take_a_token(client: Client) -> None:
    async with client.get("/openapi.json") as response:
        paths = (await response.json())["paths"]
    for endpoint in PRIVATE:
        operation = paths[endpoint.path][endpoint.method.lower()]
        assert operation["security"] == [{"bearer": []}, {}], endpoint.path
        assert "401" in operation["responses"], endpoint.path
    for path in ("/health", "/badge/{name}/status.svg", "/openapi.json"):
        assert "security" not in paths[path]["get"], path


def test_a_read_token_variable_named_but_unset_or_the_api_token_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"server.read_token_env: CM_READ is not set"):
        settings_for(tmp_path, config_text(), {"CRYPTOMON_API_TOKEN": WRITE})
    with pytest.raises(ConfigError, match=r"holds the API token") as same:
        settings_for(tmp_path, config_text(), {"CM_READ": WRITE, "CRYPTOMON_API_TOKEN": WRITE})
    assert WRITE not in str(same.value)
    assert settings_for(tmp_path, config_text(""), {}).read_token is None
    assert READ not in repr(settings_for(tmp_path, config_text(), ENVIRON))


# ---- python -m cryptomon serve --------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Served:
    """The service in a subprocess, its start-up output read up to the monitoring line."""

    def __init__(self, tmp_path: Path, text: str, *args: str, env: dict[str, str]) -> None:
        config = tmp_path / "served.toml"
        config.write_text(text)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
             "--db", str(tmp_path / "served.db"), "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "CRYPTOMON_API_TOKEN": "", **env},
        )  # fmt: skip
        assert self.process.stdout is not None
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            if line.strip().startswith("monitoring "):
                break
        self.output = "".join(lines)
        assert "monitoring " in self.output, self.output

    def request(self, method: str, path: str, token: str | None = None) -> int:
        headers = bearer(token) if token else {}
        request = urllib.request.Request(self.url + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, data=b"" if method == "POST" else None) as r:
                return int(r.status)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code)

    def stop(self) -> str:
        """Stop it (SIGTERM) and give all it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        assert self.process.stdout is not None
        rest = self.process.stdout.read()
        self.process.wait(timeout=30)
        self.process.stdout.close()
        return self.output + rest


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    service = Served(tmp_path, config_text(), env=ENVIRON)
    try:
        yield service
    finally:
        output = service.stop()
        assert READ not in output and WRITE not in output  # no token in any log line


def test_the_service_asks_every_reader_for_a_token(served: Served) -> None:
    for path in ("/api/providers", "/api/alerts", "/api/events", "/metrics", "/ws/stats"):
        assert served.request("GET", path) == 401, path
        assert served.request("GET", path, READ) == 200, path
        assert served.request("GET", path, WRITE) == 200, path
    for path in ("/health", "/livez", "/readyz", "/openapi.json", "/badge/Up/status.svg"):
        assert served.request("GET", path) == 200, path
    trigger = "/api/scheduler/trigger/health_checks"
    assert served.request("POST", trigger) == 401
    assert served.request("POST", trigger, READ) == 403
    assert served.request("POST", trigger, WRITE) == 200

    async def feed() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{served.url}/ws/live?token=wrong")
            async with session.ws_connect(f"{served.url}/ws/live") as ws:
                await ws.send_json({"type": "auth", "token": READ})
                greeting = await ws.receive_json(timeout=10)
        return refused.value.status, greeting["type"]

    assert asyncio.run(feed()) == (401, "connection_established")


def test_start_up_warns_when_reads_are_open_beyond_loopback(tmp_path: Path) -> None:
    warning = "with reads open"
    for text, env, warned in (
        (config_text(""), {}, True),
        (config_text(), ENVIRON, False),
    ):
        service = Served(tmp_path, text, "--host", "0.0.0.0", env=env)
        output = service.stop()
        assert (warning in output) is warned, output
        assert "listening on http://0.0.0.0:" in output
        if warned:
            assert "read_token_env" in output
    # On loopback, reads open are no warning.
    assert warning not in Served(tmp_path, config_text(""), env={}).stop()


def test_the_service_refuses_to_start_with_its_read_token_unset(tmp_path: Path) -> None:
    config = tmp_path / "unset.toml"
    config.write_text(config_text())
    result = subprocess.run(
        [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
         "--db", str(tmp_path / "unset.db"), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CM_READ": "", "CRYPTOMON_API_TOKEN": WRITE},
    )  # fmt: skip
    assert result.returncode == 1
    assert "server.read_token_env: CM_READ is not set" in result.stderr
    assert WRITE not in result.stdout + result.stderr
