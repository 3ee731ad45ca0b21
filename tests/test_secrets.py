"""Secrets stay secret: provider keys, the API token and a notification channel's secrets.

One test runs the real service (`python -m cryptomon serve`) with every kind of secret set
in its environment: a provider key sent in a header, one sent in the query string, the API
token, and a webhook whose URL, `Authorization` header and HMAC secret come from the
environment. It uses them all (probes, jobs, an acknowledgement, notifications, the live
feed, the CLI), proves each one was really used, and then proves that no secret, nor its
first 8 characters, is in the database, its WAL, the archive, any snapshot row, any HTTP
response or WebSocket message, or any line the service and the CLI printed.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from standins import StandIn, closed_port

from cryptomon.projections.notices import LOG_TYPES
from cryptomon.service.app import ENDPOINTS
from cryptomon.ws.messages import TOPICS


def secret(label: str) -> str:
    """A fresh secret whose first 8 characters (label included) appear nowhere by chance."""
    return label + secrets.token_urlsafe(24)


HEADER_KEY = secret("Hk_")
QUERY_KEY = secret("Qk_")
API_TOKEN = secret("Tk_")
HOOK_URL_TOKEN = secret("Uk_")
HOOK_AUTH = secret("Ak_")
HOOK_HMAC = secret("Mk_")
SECRETS = {
    "provider header key": HEADER_KEY,
    "provider query key": QUERY_KEY,
    "API token": API_TOKEN,
    "webhook URL token": HOOK_URL_TOKEN,
    "webhook Authorization header": HOOK_AUTH,
    "webhook HMAC secret": HOOK_HMAC,
}
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, within: float = 15.0
) -> T:
    """Poll `check` until it returns something other than None; fail at the deadline."""
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---- the webhook receiver --------------------------------------------------------------


@dataclass
class Hook:
    """A webhook receiver on 127.0.0.1 that checks what it gets. Its first answer is a 500
    quoting the request's secrets back (as careless receivers do), so the notifier's error
    handling has to keep them out of what it stores and shows."""

    port: int = 0
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.match_info["token"], dict(request.headers), body))
        if len(self.received) == 1:
            echo = f"denied {request.path} for {request.headers.get('Authorization')}"
            return web.Response(status=500, text=echo)
        return web.json_response({"ok": True})


@asynccontextmanager
async def running_hook() -> AsyncIterator[Hook]:
    hook = Hook()
    app = web.Application()
    app.router.add_post("/hook/{token}", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        hook.port = runner.addresses[0][1]
        yield hook
    finally:
        await runner.cleanup()


# ---- what was seen ---------------------------------------------------------------------


@dataclass
class Seen:
    """Every byte the test saw come out of cryptomon, by where it came from."""

    blobs: list[tuple[str, bytes]] = field(default_factory=list)

    def add(self, where: str, data: bytes | str) -> None:
        self.blobs.append((where, data.encode() if isinstance(data, str) else data))

    def add_response(self, where: str, response: aiohttp.ClientResponse, body: bytes) -> None:
        head = b"\n".join(name + b": " + value for name, value in response.raw_headers)
        self.add(f"{where} (status line and headers)", f"{response.status} {response.reason}\n")
        self.add(f"{where} (headers)", head)
        self.add(f"{where} (body)", body)

    def add_file(self, path: Path, when: str) -> None:
        data = path.read_bytes()
        self.add(f"{path.name} {when}", data)
        if path.name.endswith(".gz") and data:
            self.add(f"{path.name} {when}, decompressed", gzip.decompress(data))

    def leaks(self) -> list[str]:
        found = []
        for where, data in self.blobs:
            for name, value in SECRETS.items():
                for needle in dict.fromkeys((value, value[:8])):
                    if needle.encode() in data:
                        found.append(f"{name} ({needle[:8]}…) in {where}")
        return found


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, seen: Seen) -> None:
        self.session = session
        self.base = base
        self.seen = seen

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = API_TOKEN,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, json=body, headers=sent
        ) as response:
            data = await response.read()
            self.seen.add_response(f"{method} {path}", response, data)
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(data) if "json" in kind else data

    async def get(self, path: str, **kwargs: Any) -> Any:
        status, data = await self.call("GET", path, **kwargs)
        assert status in (200, 503), (path, status, data)
        return data

    async def post(self, path: str, body: Any = None) -> Any:
        status, data = await self.call("POST", path, body=body)
        assert status == 200, (path, status, data)
        return data


def config_text(standin: StandIn, hook: Hook) -> str:
    # Every GET route twice and more, from one client: past the default burst of requests.
    return f"""
[server]
request_burst = 100000

[storage]
archive_after = "1ms"

[monitoring]
offline_after_failures = 1
online_after_successes = 1

[[providers]]
name = "HeaderKeyed"
category = "market_data"
base_url = "{standin.url("")}"
health_path = "/healthy"
interval = "1h"
api_key_env = "CM_TEST_HEADER_KEY"
api_key_header = "X-Api-Key"
api_key_prefix = "Token "
rate_limit = {{ requests = 100, per = "60s" }}
observe = {{ price = "[BODY].data[0]" }}
quote = "BTC-USD"
[[providers.collections]]
path = "/error500?vs=usd"

[[providers]]
name = "QueryKeyed"
category = "blockchain_explorers"
base_url = "{standin.url("")}"
health_path = "/error500?module=stats"
interval = "1h"
api_key_env = "CM_TEST_QUERY_KEY"
api_key_query = "apikey"
rate_limit = {{ requests = 5, per = "1h" }}
chain = "ethereum"
[[providers.collections]]
path = "/healthy?module=proxy"
expect_key = "ok"
observe = {{ head = "[BODY].data[0]" }}
[[providers.collections]]
path = "/garbage"
expect_key = "ok"

# The same keys on providers that fail in other ways: refused, too slow, rate-limited.
[[providers]]
name = "QueryKeyedGone"
category = "news"
base_url = "http://127.0.0.1:{closed_port()}/v1"
health_path = "?module=stats"
interval = "1h"
api_key_env = "CM_TEST_QUERY_KEY"
api_key_query = "key"

[[providers]]
name = "QueryKeyedSlow"
category = "news"
base_url = "{standin.url("")}"
health_path = "/hang"
interval = "1h"
timeout = "300ms"
degraded_latency = "100ms"
api_key_env = "CM_TEST_QUERY_KEY"
api_key_query = "token"

[[providers]]
name = "HeaderKeyedLimited"
category = "exchanges"
base_url = "{standin.url("")}"
health_path = "/ratelimited"
interval = "1h"
api_key_env = "CM_TEST_HEADER_KEY"
api_key_header = "Authorization"
api_key_prefix = "Bearer "

[[notifications]]
name = "ops"
kind = "webhook"
url_env = "CM_TEST_HOOK_URL"
headers = {{ "Authorization" = "env:CM_TEST_HOOK_AUTH", "X-Team" = "sre" }}
hmac_secret_env = "CM_TEST_HOOK_SECRET"
"""


async def run_cli(
    seen: Seen, environ: dict[str, str], *args: str, within: float = 60.0
) -> tuple[int, str]:
    """Run `python -m cryptomon ARGS` to the end; its exit code and stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), within)
    seen.add(f"`{args[0]}` stdout", stdout)
    seen.add(f"`{args[0]}` stderr", stderr)
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def collect_feed(ws: aiohttp.ClientWebSocketResponse, seen: Seen, where: str) -> list[Any]:
    """Messages from the feed until it has been quiet for a moment."""
    messages: list[Any] = []
    while True:
        try:
            message = await ws.receive(timeout=0.5)
        except TimeoutError:
            return messages
        if message.type != aiohttp.WSMsgType.TEXT:
            return messages
        seen.add(where, message.data)
        messages.append(json.loads(message.data))


async def test_no_secret_reaches_storage_responses_the_feed_or_any_output(
    standin: StandIn, tmp_path: Path
) -> None:
    seen = Seen()
    data = tmp_path / "data"
    data.mkdir()
    db = data / "secrets.db"
    config = tmp_path / "secrets.toml"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running_hook() as hook, aiohttp.ClientSession() as session:
        config.write_text(config_text(standin, hook))
        environ = {
            **os.environ,
            "CM_TEST_HEADER_KEY": HEADER_KEY,
            "CM_TEST_QUERY_KEY": QUERY_KEY,
            "CRYPTOMON_API_TOKEN": API_TOKEN,
            "CM_TEST_HOOK_URL": f"http://127.0.0.1:{hook.port}/hook/{HOOK_URL_TOKEN}",
            "CM_TEST_HOOK_AUTH": f"Bearer {HOOK_AUTH}",
            "CM_TEST_HOOK_SECRET": HOOK_HMAC,
        }
        common = ["--config", str(config), "--db", str(db)]
        out_path, err_path = tmp_path / "serve.out", tmp_path / "serve.err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            service = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cryptomon", "serve", *common, "--port", str(port),
                "--log-format", "json", stdout=out, stderr=err, env=environ,
            )  # fmt: skip
        api = Api(session, base, seen)
        try:
            await exercise_the_service(api, session, base, standin, hook, seen, data)
            service.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(service.wait(), 30) == 0
        finally:
            if service.returncode is None:
                service.kill()
                await service.wait()
        service_out, service_err = out_path.read_text(), err_path.read_text()
        assert f"listening on {base}" in service_out
        log_lines = [json.loads(line) for line in service_err.splitlines() if line.strip()]
        assert log_lines and all({"time", "level", "message"} <= line.keys() for line in log_lines)
        seen.add("service stdout", service_out)
        seen.add("service stderr (JSON log)", service_err)
        assert service_err.count("refused a malformed HTTP request from 127.0.0.1") == 3
        assert "offered only WebSocket subprotocols this server does not speak" in service_err

        code, exported = await run_cli(seen, environ, "export", *common)
        assert code == 0
        exported_events = [json.loads(line) for line in exported.splitlines()]
        assert {e["type"] for e in exported_events} >= {"ProbeRecorded", "AlertAcknowledged"}
        # Each way a keyed probe can fail was recorded (and so scanned).
        kinds = {e["payload"].get("error_kind") for e in exported_events}
        assert kinds >= {"http_5xx", "invalid_body", "connection_refused", "timeout"}
        assert "rate_limited" in kinds
        code, replayed = await run_cli(seen, environ, "replay", *common)
        assert code == 0 and replayed.startswith("OK"), replayed
        code, verified = await run_cli(seen, environ, "verify", *common)
        assert code == 0 and verified.startswith("OK"), verified
        code, checked = await run_cli(seen, environ, "check-config", *common)
        assert code == 0 and checked.count("probed") == 5, checked
        code, tested = await run_cli(seen, environ, "notify-test", "ops", *common)
        assert code == 0 and "HTTP 200" in tested, tested

    names = scan_files(seen, data, "after shutdown")
    assert any(name.endswith(".jsonl.gz") for name in names), f"nothing was archived: {names}"
    scan_database(seen, db)

    leaks = seen.leaks()
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
    assert len(seen.blobs) > 200  # the scan covered what it says it covered


async def exercise_the_service(
    api: Api,
    session: aiohttp.ClientSession,
    base: str,
    standin: StandIn,
    hook: Hook,
    seen: Seen,
    data: Path,
) -> None:
    async def listening() -> bool | None:
        try:
            async with session.get(base + "/health") as response:
                return True if response.status in (200, 503) else None
        except aiohttp.ClientConnectionError:
            return None

    await eventually(listening, "the service to listen", within=30)

    # Writes need the token: refused without it or with a wrong one, done with it.
    for token in (None, "wrong", API_TOKEN[:8], API_TOKEN + "x"):
        status, _ = await api.call("POST", "/api/scheduler/trigger/health_checks", token=token)
        assert status == 401
    await api.post("/api/scheduler/trigger/health_checks")
    assert standin.last_headers.get("X-Api-Key") == f"Token {HEADER_KEY}"  # the header key
    await api.post("/api/scheduler/trigger/explorer_data")
    assert standin.last_query.get("apikey") == QUERY_KEY  # the query key
    await api.post("/api/scheduler/trigger/market_data")
    await api.post("/api/scheduler/trigger/rate_limit_snapshot")

    async def open_alert() -> dict[str, Any] | None:
        alerts = await api.get("/api/alerts?open=true&provider=QueryKeyed")
        return next((a for a in alerts["alerts"] if a["kind"] == "offline"), None)

    alert = await eventually(open_alert, "QueryKeyed's offline alert")
    acknowledged = await api.post(
        f"/api/alerts/{alert['id']}/acknowledge", {"note": "on it", "actor": "alice"}
    )
    assert acknowledged["alert"]["acknowledged_by"] == "alice"

    # The webhook got the incidents the alerts opened (after one 500), signed. (It groups
    # by incident, the default: the acknowledgement is no message of its own.)
    def hook_events() -> list[str]:
        return [json.loads(body)["event"] for _, _, body in hook.received]

    async def delivered() -> dict[str, Any] | None:
        if hook_events().count("incident_opened") < 2:  # the first answered 500
            return None
        view = await api.get("/api/notifications")
        [ops] = view["channels"]
        return ops if ops["pending"] == 0 else None

    ops = await eventually(delivered, "the webhook deliveries")
    assert ops["last_error"].startswith("HTTP 500")
    # Alerts that join no incident (a rate limit's) are told of each on its own.
    alone = {(json.loads(body)["alert"] or {}).get("kind") for _, _, body in hook.received}
    assert alone - {None} <= {"rate_limit", "certificate", "quote_stale"}
    assert "incident_opened" in hook_events()
    for token, headers, body in hook.received:
        assert token == HOOK_URL_TOKEN
        assert headers["Authorization"] == f"Bearer {HOOK_AUTH}"
        expected = "sha256=" + hmac.new(HOOK_HMAC.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Cryptomon-Signature"] == expected

    # The live feed on every topic (raw events too): with the token in the query, in an
    # auth message, and a replay from 0.
    every = ",".join(TOPICS)
    async with session.ws_connect(f"{base}/ws/live?token={API_TOKEN}&topics={every}") as ws:
        await api.post("/api/scheduler/trigger/health_checks")
        live = await collect_feed(ws, seen, "the live feed (?token=)")
    assert live[0]["type"] == "connection_established"
    assert any(m["type"] == "event" for m in live)
    async with session.ws_connect(f"{base}/ws/live?since=0&topics={every}") as ws:
        await ws.send_json({"type": "auth", "token": API_TOKEN})
        replayed = await collect_feed(ws, seen, "the live feed (auth message, since=0)")
    assert sum(m["type"] == "event" for m in replayed) > 10
    for wrong in ("?token=wrong", f"?token={API_TOKEN[:8]}"):
        async with session.get(f"{base}/ws/live{wrong}") as response:
            seen.add_response("GET /ws/live (wrong token)", response, await response.read())
            assert response.status == 401

    # The token offered as a WebSocket subprotocol, as browsers' clients often do.
    async with session.ws_connect(
        f"{base}/ws/live?token={API_TOKEN}", protocols=("bearer", API_TOKEN)
    ) as ws:
        greeting = await ws.receive_json(timeout=10)
        seen.add("the live feed (token as a subprotocol)", json.dumps(greeting))
        assert greeting["type"] == "connection_established"

    # Requests aiohttp's parser refuses, each carrying the token in the line it refuses.
    # Its answer quotes that line back to the sender alone; the log must not.
    port = int(base.rsplit(":", 1)[1])
    for request in (
        f"GET /ws/live?token={API_TOKEN}&pad={'9' * 9000} HTTP/1.1\r\nHost: a\r\n\r\n",
        f"GET /api/providers HTTP/1.1\r\nAuthorization: Bearer {API_TOKEN}\nX: 1\r\n\r\n",
        f"GET / HTTP/1.1\r\nAuthorization: Bearer {API_TOKEN}{'t' * 9000}\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request.encode())
        status_line = await reader.readline()
        assert status_line.split()[1:2] == [b"400"], status_line
        writer.close()
        await writer.wait_closed()

    # Archive old probe events and snapshot the read models.
    await api.post("/api/scheduler/trigger/database_cleanup")
    await api.post("/api/scheduler/trigger/metrics_aggregation")

    # Every GET endpoint, as a client without and with the token.
    path_values = {
        "name": ("HeaderKeyed", "QueryKeyed"),
        "log_type": LOG_TYPES,
        "chain": ("ethereum",),  # QueryKeyed is its node
        "pair": ("BTC-USD",),  # HeaderKeyed quotes it
        "window": ("24h", "7d", "30d"),  # the uptime badges
        "incident_id": ("1",),  # QueryKeyed's outage, with its alerts' messages
    }
    paths: list[str] = []
    for endpoint in ENDPOINTS:
        if endpoint.method != "GET" or endpoint.path == "/ws/live":
            continue
        filled = [endpoint.path]
        for name, values in path_values.items():
            filled = [p.replace(f"{{{name}}}", v) for p in filled for v in values]
        paths += filled
    paths += [
        "/api/events?limit=1000",
        "/api/alerts?acknowledged=true",
        "/api/providers?category=blockchain_explorers",
        *(f"/api/logs/{log}?limit=1000&provider=QueryKeyed" for log in LOG_TYPES),
        "/static/dashboard.js",
    ]
    for path in paths:
        for token in (None, API_TOKEN):
            await api.get(path, token=token)
    await api.get("/", headers={"Accept": "text/html"})
    for missing in ("/static/index.html", "/api/providers/Nobody", "/api/alerts/1/acknowledge"):
        status, _ = await api.call("GET", missing)
        assert status in (404, 405)
    metrics = await api.get("/metrics")
    assert b"cryptomon_notification_attempts_total" in metrics
    provider = await api.get("/api/providers/QueryKeyed")
    assert provider["api_key"] is not None and len(provider["api_key"].rstrip("…")) < 8

    # What is on disk while the service runs, the WAL included.
    names = scan_files(seen, data, "while serving")
    assert any(name.endswith("-wal") for name in names), f"no WAL to look at: {names}"


def scan_files(seen: Seen, directory: Path, when: str) -> list[str]:
    """Add every file under `directory` (archives decompressed too); their names."""
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    for path in files:
        seen.add_file(path, when)
    return [path.name for path in files]


def scan_database(seen: Seen, db: Path) -> None:
    """Add each snapshot row, and every row of every table, value by value."""
    with sqlite3.connect(db) as conn:
        snapshots = conn.execute("SELECT name, state FROM snapshots").fetchall()
        assert snapshots, "no snapshot was saved"
        for name, state in snapshots:
            seen.add(f"snapshot row {name!r}", state)
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        for (table,) in conn.execute(query).fetchall():
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                values = [v if isinstance(v, bytes) else str(v).encode() for v in row]
                seen.add(f"a row of table {table}", b"\x00".join(values))
