"""The REST API through aiohttp's test client, on the real app over stand-in providers.

Every app here is `create_app(Settings.from_config(...))` with a config in tmp_path that
points at stand-ins on 127.0.0.1 and a database in tmp_path. Nothing probes on a timer
(`probing=False`): tests trigger the health checks over HTTP, then wait for the read
models to reach the log's head before reading them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from standins import StandIn, closed_port

from cryptomon.config import load_config
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import ProbeRecorded
from cryptomon.http.errors import PROBLEM_TYPE, Problem
from cryptomon.http.keys import MONITOR, READ_MODELS, STORE
from cryptomon.http.schemas import (
    Acknowledged,
    AlertList,
    ConfigReloaded,
    EventPage,
    Health,
    Liveness,
    LogPage,
    ProviderList,
    ProviderSeries,
    ProviderStats,
    ProviderView,
    Readiness,
    SystemStatus,
    Triggered,
)
from cryptomon.http.settings import Settings
from cryptomon.projections.metrics import LATENCY_BOUNDS_MS
from cryptomon.service.app import ENDPOINTS, create_app

TOKEN = "s3cret-token"
API_KEY = "SECRET-KEY-0123456789abcdef"
# Fields whose value depends on the wall clock at the moment of the request.
WALL_CLOCK_FIELDS = frozenset({"timestamp", "uptime_seconds", "reset_in_seconds"})

Client = TestClient[web.Request, web.Application]
T = TypeVar("T")


def config_text(standin: StandIn, *, server: str = "", only_up: bool = False) -> str:
    """Up answers, Down refuses connections, Limited answers 429 with Retry-After. Down is
    an Ethereum node and Limited quotes BTC-USD, neither ever observing a value."""
    up = f"""
[[providers]]
name = "Up"
category = "market_data"
base_url = "{standin.url("")}"
health_path = "/healthy"
interval = "30s"
api_key_env = "UP_API_KEY"
api_key_header = "X-Api-Key"
rate_limit = {{ requests = 100, per = "60s" }}
[[providers.collections]]
path = "/healthy?ids=bitcoin"
expect_key = "data"
"""
    if only_up:
        return server + up
    return (
        server
        + up
        + f"""
[[providers]]
name = "Down"
category = "rpc_nodes"
base_url = "http://127.0.0.1:{closed_port()}"
interval = "1m"
observe = {{ head = "[BODY].result" }}
chain = "ethereum"

[[providers]]
name = "Limited"
category = "news"
base_url = "{standin.url("")}"
health_path = "/ratelimited"
interval = "1m"
observe = {{ price = "[BODY].price" }}
quote = "BTC-USD"
"""
    )


@dataclass
class Service:
    """One running app and its test client, with the steps tests repeat."""

    client: Client
    token: str | None = None
    bodies: list[bytes] = field(default_factory=list)  # every body read, to look for secrets

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    def _headers(self, token: str | None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, str, bytes, Mapping[str, str]]:
        async with self.client.request(method, path, headers=headers, data=data) as response:
            body = await response.read()
            self.bodies.append(body)
            # Only the health endpoints answer 5xx, and only to say the service is unwell.
            health = ("/health", "/readyz", "/api/database/health")
            unwell = response.status == 503 and path in health
            assert response.status < 500 or unwell, (method, path, response.status, body[:500])
            return response.status, response.content_type, body, response.headers

    async def get_json(self, path: str, status: int = 200) -> Any:
        got, content_type, body, _ = await self.request("GET", path)
        assert got == status, (path, got, body[:500])
        assert content_type == "application/json"
        return json.loads(body)

    async def get(self, path: str, kind: type[T], status: int = 200) -> T:
        got, content_type, body, _ = await self.request("GET", path)
        assert got == status, (path, got, body[:500])
        assert content_type == "application/json"
        return msgspec.json.decode(body, type=kind)

    async def problem(
        self,
        method: str,
        path: str,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Problem:
        got, content_type, body, _ = await self.request(method, path, headers=headers, data=data)
        assert got == status, (method, path, got, body[:500])
        assert content_type == PROBLEM_TYPE, (method, path, content_type)
        problem = msgspec.json.decode(body, type=Problem)
        assert problem.status == status
        assert problem.detail
        return problem

    async def trigger(self, job: str = "health_checks", token: str | None = None) -> Triggered:
        status, _, body, _ = await self.request(
            "POST", f"/api/scheduler/trigger/{job}", headers=self._headers(token)
        )
        assert status == 200, body
        await self.settle()
        return msgspec.json.decode(body, type=Triggered)

    async def acknowledge(
        self, alert_id: int, body: Mapping[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, bytes]:
        status, _, raw, _ = await self.request(
            "POST",
            f"/api/alerts/{alert_id}/acknowledge",
            headers={"Content-Type": "application/json", **self._headers(token)},
            data=json.dumps(body).encode() if body is not None else None,
        )
        await self.settle()
        return status, raw

    async def settle(self) -> None:
        """Wait until the read models show every committed event."""
        async with asyncio.timeout(5):
            await self.app[READ_MODELS].wait_for(self.app[STORE].head)

    async def take_down(self) -> int:
        """Trigger health checks until Down is offline; return its open offline alert's id."""
        for _ in range(3):
            await self.trigger()
        [alert] = (await self.get("/api/alerts?provider=Down&open=true", AlertList)).alerts
        assert (alert.kind, alert.severity) == ("offline", "critical")
        return alert.id


Start = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start(
    tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> AsyncIterator[Start]:
    """Build and serve the real app; each call may name its own config and environ."""

    async def build(
        *,
        server: str = "",
        only_up: bool = False,
        environ: Mapping[str, str] | None = None,
        database: Path | None = None,
        config: Path | None = None,
        reloadable: bool = False,  # started with the file's path: a reload reads it again
    ) -> Service:
        if config is None:
            config = tmp_path / "cryptomon.toml"
            config.write_text(config_text(standin, server=server, only_up=only_up))
        env = {"UP_API_KEY": API_KEY} if environ is None else dict(environ)
        settings = Settings.from_config(
            load_config(config),
            database=database or tmp_path / "x.db",
            environ=env,
            probing=False,
            config_path=config if reloadable else None,
        )
        client = await aiohttp_client(create_app(settings))
        return Service(client, token=settings.api_token)

    yield build


def filled(path: str, alert_id: int) -> str:
    return (
        path.replace("{name}", "Up")
        .replace("{log_type}", "connection")
        .replace("{alert_id}", str(alert_id))
        .replace("{incident_id}", "1")  # Down's outage, the first incident
        .replace("{job_id}", "rate_limit_snapshot")
        .replace("{chain}", "ethereum")  # Down is its node
        .replace("{pair}", "BTC-USD")  # Limited quotes it
        .replace("{window}", "24h")  # a badge's uptime window
    )


def database_bytes(directory: Path) -> bytes:
    return b"".join(file.read_bytes() for file in sorted(directory.glob("x.db*")))


def without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK_FIELDS}
    if isinstance(value, list):
        return [without_wall_clock(v) for v in value]
    return value


# ---- every endpoint --------------------------------------------------------------


async def test_every_endpoint_answers_with_its_declared_type(start: Start) -> None:
    service = await start()
    await service.trigger("market_data")
    alert_id = await service.take_down()
    paths = {e.path for e in ENDPOINTS}
    window_id = ""  # the maintenance window the walk creates, then cancels
    # The walk defines a provider over the API, changes, pauses, resumes and deletes it.
    walked = (
        b'{"name": "Walked", "category": "news", "base_url": "http://127.0.0.1:9",'
        b' "interval": "1h"}'
    )
    for endpoint in ENDPOINTS:
        path = filled(endpoint.path, alert_id).replace("{window_id}", window_id)
        headers = {"Content-Type": "application/json"} if endpoint.method == "POST" else None
        create = endpoint.method == "POST" and endpoint.path == "/api/maintenance"
        data = (
            b'{"name": "walk", "providers": ["Up"],'
            b' "start": "2999-01-01T00:00:00Z", "end": "2999-01-01T01:00:00Z"}'
            if create
            else None
        )
        defines = endpoint.method in ("POST", "PUT") and endpoint.path.startswith("/api/providers")
        if endpoint.method != "GET" and endpoint.path.startswith("/api/providers/{name}"):
            path = endpoint.path.replace("{name}", "Walked")
        if defines and not endpoint.path.endswith(("/pause", "/resume")):
            data = walked
            headers = {"Content-Type": "application/json", "If-Match": "*"}
        status, content_type, body, _ = await service.request(
            endpoint.method, path, headers=headers, data=data
        )
        if create:
            window_id = json.loads(body)["id"]
        created = create or (endpoint.method, endpoint.path) == ("POST", "/api/providers")
        # Down is offline and Limited rate-limited, yet /health is 200: providers never
        # make it 503. /ws/live is a WebSocket: a plain GET gets its documented 426.
        expected = 201 if created else {"/ws/live": 426}.get(endpoint.path, 200)
        assert status == expected, (endpoint.path, status, body[:500])
        websocket = (426,) if endpoint.websocket else ()
        assert expected in (200, 201, endpoint.unhealthy_status, *endpoint.errors, *websocket)
        if endpoint.path == "/ws/live":
            assert content_type == PROBLEM_TYPE
            async with service.client.ws_connect(endpoint.path) as ws:
                greeting = await ws.receive_json(timeout=5)
            assert greeting["type"] == "connection_established"
            assert greeting["client_id"].startswith("client_")
        elif endpoint.response is not None:
            assert content_type == "application/json", endpoint.path
            msgspec.json.decode(body, type=endpoint.response)
        elif endpoint.path == "/metrics":
            assert content_type == "text/plain"
            text = body.decode()
            assert "# TYPE cryptomon_provider_up gauge" in text
            assert 'cryptomon_provider_up{provider="Up"} 1' in text
            assert 'cryptomon_provider_up{provider="Down"} 0' in text
            assert 'cryptomon_provider_status{provider="Down",status="offline"} 1' in text
            assert 'cryptomon_probes_total{provider="Down",kind="health",outcome="failed"}' in text
            assert 'cryptomon_probe_duration_seconds_bucket{provider="Up",le="+Inf"} 3\n' in text
            assert f"cryptomon_event_log_position {service.app[STORE].head}" in text
            assert "cryptomon_alerts_open " in text
        elif endpoint.path.startswith("/badge/"):
            assert content_type == endpoint.media_type == "image/svg+xml", endpoint.path
            assert body.startswith(b"<svg") and b"<title>Up: " in body, endpoint.path
        elif endpoint.path == "/openapi.json":
            document = json.loads(body)
            assert document["openapi"].startswith("3.")
            assert set(document["paths"]) == paths
            for described in ENDPOINTS:
                assert described.method.lower() in document["paths"][described.path]
        elif endpoint.path == "/docs":
            assert content_type == "text/html"
            assert body.lstrip().lower().startswith(b"<!doctype html>")
            assert b"/openapi.json" in body
    # The documents the table names are the handlers' own.
    info = await service.get_json("/")
    assert info["docs"] == "/docs"
    assert info["endpoints"]["openapi"] == "/openapi.json"


def metric_samples(text: str) -> dict[str, float]:
    """`/metrics`' samples by name and labels as written, e.g. `x{provider="Up"}`."""
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_metrics_latency_is_a_histogram_in_seconds_over_the_rollups_bins(
    start: Start,
) -> None:
    service = await start(only_up=True)
    for _ in range(3):
        await service.trigger()
    page = await service.get_json("/api/events?type=ProbeRecorded&stream=provider:Up")
    latencies = [
        event["payload"]["latency_ms"]
        for event in page["events"]
        if event["payload"]["kind"] == "health" and event["payload"]["outcome"] == "success"
    ]
    assert len(latencies) == 3
    _, _, body, headers = await service.request("GET", "/metrics")
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    assert "# TYPE cryptomon_probe_duration_seconds histogram\n" in text
    got = metric_samples(text)
    family = "cryptomon_probe_duration_seconds"
    buckets = {
        name.split('le="')[1].rstrip('"}'): value
        for name, value in got.items()
        if name.startswith(f'{family}_bucket{{provider="Up",')
    }
    # The projection's own bins, in seconds; each bucket counts the probes at or under it.
    assert list(buckets) == [str(bound / 1000) for bound in LATENCY_BOUNDS_MS] + ["+Inf"]
    for bound in LATENCY_BOUNDS_MS:
        expected = sum(1 for latency in latencies if latency <= bound)
        assert buckets[str(bound / 1000)] == expected, bound
    assert buckets["+Inf"] == got[f'{family}_count{{provider="Up"}}'] == 3
    assert got[f'{family}_sum{{provider="Up"}}'] == pytest.approx(sum(latencies) / 1000)
    # No name of the old units is left.
    assert "_ms" not in "".join(line.split("{")[0] for line in text.splitlines())


async def test_a_cached_metrics_answer_keeps_its_content_type_and_headers(start: Start) -> None:
    service = await start(only_up=True)
    first = await service.request("GET", "/metrics")
    second = await service.request("GET", "/metrics")  # within the cache's second
    assert first[2] == second[2]
    for _, _, _, headers in (first, second):
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_an_over_long_request_line_gets_a_400_the_spec_documents(start: Start) -> None:
    # aiohttp's parser refuses it before any handler runs, so it answers in its own words.
    service = await start()
    document = await service.get_json("/openapi.json")
    for endpoint in ENDPOINTS:
        path = filled(endpoint.path, 1) + "?hours=" + "9" * 9000
        status, content_type, _, _ = await service.request(endpoint.method, path)
        assert status == 400, endpoint.path
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        assert content_type in operation["responses"]["400"]["content"], endpoint.path


async def test_health_has_the_seed_shape_and_200_when_healthy(start: Start) -> None:
    service = await start(only_up=True)
    await service.trigger()
    health = await service.get_json("/health")
    assert set(health) == {"status", "timestamp", "components", "metrics", "problems"}
    assert (health["status"], health["problems"]) == ("healthy", [])
    components = health["components"]
    assert set(components) == {
        "database",
        "scheduler",
        "websocket",
        "read_models",
        "providers",
        "config",
    }
    assert components["config"]["status"] == "ok" and components["config"]["errors"] == []
    assert {"status", "path", "size_mb"} <= set(components["database"])
    assert {"status", "active_jobs"} <= set(components["scheduler"])
    assert {"status", "active_connections"} <= set(components["websocket"])
    assert components["read_models"] == {
        "status": "following",
        "position": service.app[STORE].head,
        "lag": 0,
    }
    providers = components["providers"]
    assert {"total", "online", "degraded", "offline", "system_health"} <= set(providers)
    assert (providers["total"], providers["online"], providers["offline"]) == (1, 1, 0)
    msgspec.json.decode(json.dumps(health), type=Health)


async def test_health_and_readiness_stay_200_while_probed_providers_are_offline(
    tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> None:
    # Probing on, fast: two providers whose ports refuse go offline on their own.
    config = tmp_path / "offline.toml"
    config.write_text(
        config_text(standin, only_up=True).replace('interval = "30s"', 'interval = "200ms"')
        + "".join(
            f'\n[[providers]]\nname = "Gone {n}"\ncategory = "rpc_nodes"\n'
            f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "200ms"\n'
            for n in (1, 2)
        )
    )
    settings = Settings.from_config(
        load_config(config), database=tmp_path / "x.db", environ={"UP_API_KEY": API_KEY}
    )
    service = Service(await aiohttp_client(create_app(settings)))
    deadline = time.monotonic() + 30
    while True:
        status, _, body, _ = await service.request("GET", "/health")
        # Every answer on the way, not only the last: a provider going down never 503s.
        assert status == 200, body[:500]
        health = msgspec.json.decode(body, type=Health)
        if health.components.providers.offline == 2:
            break
        assert time.monotonic() < deadline, "the refusing providers never went offline"
        await asyncio.sleep(0.05)
    assert (health.status, health.problems) == ("healthy", [])
    providers = health.components.providers
    assert (providers.total, providers.online, providers.offline) == (3, 1, 2)
    assert providers.system_health == "unhealthy"  # the seed's verdict on the providers
    assert health.components.scheduler.status == "running"
    assert health.metrics.failures_last_hour >= 2
    ready = await service.get("/readyz", Readiness)
    assert (ready.status, ready.problems) == ("ready", [])
    status_body = await service.get("/api/status", SystemStatus)
    assert (status_body.offline, status_body.system_health) == (2, "unhealthy")


async def test_health_and_readiness_answer_503_naming_stopped_read_models(start: Start) -> None:
    service = await start(only_up=True)
    await service.trigger()
    assert (await service.get("/readyz", Readiness)).status == "ready"
    await service.app[READ_MODELS].stop()  # as if their follower had ended
    status, _, body, _ = await service.request("GET", "/health")
    assert status == 503
    health = msgspec.json.decode(body, type=Health)
    assert health.status == "unhealthy"
    assert health.components.read_models.status == "stopped"
    [problem] = health.problems
    assert problem.component == "read_models"
    assert f"at position {service.app[STORE].head}" in problem.detail
    assert health.components.providers.online == 1  # the body still says it all
    ready = await service.get("/readyz", Readiness, status=503)
    assert ready.status == "not_ready"
    assert [p.component for p in ready.problems] == ["read_models"]
    assert ready.checked == ["database", "read_models", "scheduler"]
    # Alive all the same: restarting the process is the orchestrator's call, not ours.
    assert await service.get("/livez", Liveness) == Liveness(status="alive")


async def test_readiness_answers_503_naming_a_stopped_scheduler(
    tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> None:
    config = tmp_path / "probing.toml"
    config.write_text(config_text(standin, only_up=True))
    settings = Settings.from_config(
        load_config(config), database=tmp_path / "x.db", environ={"UP_API_KEY": API_KEY}
    )
    service = Service(await aiohttp_client(create_app(settings)))
    assert (await service.get("/readyz", Readiness)).status == "ready"
    await service.app[MONITOR].scheduler.stop()
    ready = await service.get("/readyz", Readiness, status=503)
    assert [(p.component, p.detail) for p in ready.problems] == [
        ("scheduler", "the scheduler is not running")
    ]
    health = await service.get("/health", Health, status=503)
    assert health.components.scheduler.status == "stopped"
    assert [p.component for p in health.problems] == ["scheduler"]


async def test_livez_answers_a_tiny_body_and_checks_nothing(start: Start) -> None:
    service = await start()
    got, content_type, body, _ = await service.request("GET", "/livez")
    assert (got, content_type, body) == (200, "application/json", b'{"status":"alive"}')


async def test_a_plain_get_of_the_live_feed_is_426_upgrade_required(start: Start) -> None:
    service = await start()
    got, _, _, headers = await service.request("GET", "/ws/live?since=0")
    assert (got, headers["Upgrade"]) == (426, "websocket")
    problem = await service.problem("GET", "/ws/live", 426)
    assert problem.type == "/problems/upgrade-required"
    assert "WebSocket" in problem.detail
    # The kept-alive connection still serves the next request as HTTP.
    assert (await service.get("/livez", Liveness)).status == "alive"
    # A bad parameter is still named before the missing upgrade.
    assert (await service.problem("GET", "/ws/live?since=-1", 400)).parameter == "since"
    # And the spec says so: 426 with its Upgrade header; success is the handshake.
    document = await service.get_json("/openapi.json")
    responses = document["paths"]["/ws/live"]["get"]["responses"]
    assert "101" in responses and "200" not in responses
    assert responses["426"]["headers"]["Upgrade"]["schema"]["const"] == "websocket"
    assert PROBLEM_TYPE in responses["426"]["content"]


async def test_openapi_says_what_health_and_readiness_answers_mean(start: Start) -> None:
    service = await start()
    paths = (await service.get_json("/openapi.json"))["paths"]
    health = paths["/health"]["get"]["responses"]
    assert "components.providers" in health["200"]["description"]
    assert "Never answered because of the monitored providers" in health["503"]["description"]
    readyz = paths["/readyz"]["get"]["responses"]
    assert set(readyz) >= {"200", "503"}
    assert readyz["503"]["content"] == readyz["200"]["content"]
    livez = paths["/livez"]["get"]["responses"]
    assert "503" not in livez
    assert livez["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Liveness")


# ---- errors --------------------------------------------------------------------

BAD_INPUT: list[tuple[str, str, int, str | None]] = [
    # (method, path, status, the parameter named in the problem)
    ("GET", "/api/providers/Up/stats?hours=abc", 400, "hours"),
    ("GET", "/api/providers/Up/stats?hours=-1", 400, "hours"),
    ("GET", "/api/providers/Up/stats?hours=0", 400, "hours"),
    ("GET", "/api/providers/Up/stats?hours=1e9", 400, "hours"),
    ("GET", "/api/providers/Up/stats?hours=1e999", 400, "hours"),
    ("GET", "/api/providers/Up/stats?hours=nan", 400, "hours"),
    ("GET", "/api/providers/Up/stats?hours=NaN", 400, "hours"),
    ("GET", "/api/providers/Up/stats?hours=inf", 400, "hours"),
    ("GET", "/api/providers/Up/stats?hours=", 400, "hours"),
    ("GET", "/api/status/metrics?hours=twelve", 400, "hours"),
    ("GET", "/api/alerts?hours=-5", 400, "hours"),
    ("GET", "/api/analytics/failures?hours=nan", 400, "hours"),
    ("GET", "/api/logs/connection?hours=99999999", 400, "hours"),
    ("GET", "/api/logs/connection?limit=abc", 400, "limit"),
    ("GET", "/api/logs/connection?limit=0", 400, "limit"),
    ("GET", "/api/logs/connection?limit=-3", 400, "limit"),
    ("GET", "/api/logs/connection?limit=1001", 400, "limit"),
    ("GET", "/api/logs/connection?limit=2.5", 400, "limit"),
    ("GET", "/api/logs/connection?limit=99999999999999999999999", 400, "limit"),
    ("GET", "/api/alerts?limit=0", 400, "limit"),
    ("GET", "/api/events?limit=0", 400, "limit"),
    ("GET", "/api/events?after=-1", 400, "after"),
    ("GET", "/api/events?after=x", 400, "after"),
    ("GET", "/api/events?type=NoSuchEvent", 400, "type"),
    ("GET", "/api/alerts?acknowledged=maybe", 400, "acknowledged"),
    ("GET", "/api/alerts?severity=apocalyptic", 400, "severity"),
    ("GET", "/api/providers?category=", 400, "category"),
    ("GET", "/api/logs/bogus", 400, "log_type"),
    ("GET", "/api/logs/connection?limit=5&limit=6", 400, "limit"),
    ("GET", "/api/alerts?hours=1&hours=2", 400, "hours"),
    ("GET", "/api/providers/Nope", 404, None),
    ("GET", "/api/providers/Nope/stats", 404, None),
    ("GET", "/api/rate-limits/Nope", 404, None),
    ("GET", "/api/rate-limits/Down", 404, None),  # no limit known for it
    ("POST", "/api/alerts/987654321/acknowledge", 404, None),
    ("POST", "/api/alerts/abc/acknowledge", 400, "alert_id"),
    ("POST", "/api/alerts/1.5/acknowledge", 400, "alert_id"),
    ("POST", "/api/alerts/0/acknowledge", 400, "alert_id"),
    ("POST", "/api/alerts/-4/acknowledge", 400, "alert_id"),
    ("POST", "/api/alerts/99999999999999999999999999/acknowledge", 400, "alert_id"),
    ("POST", "/api/scheduler/trigger/nope", 404, None),
    ("GET", "/nope", 404, None),
    ("GET", "/api/nope", 404, None),
    ("GET", "/api/providers/Up/nope", 404, None),
    ("POST", "/api/status", 405, None),
    ("DELETE", "/api/alerts", 405, None),
    ("GET", "/api/scheduler/trigger/health_checks", 405, None),
    ("GET", "/api/alerts/1/acknowledge", 405, None),
]


async def test_bad_input_gets_a_problem_document(start: Start) -> None:
    service = await start()
    for method, path, status, parameter in BAD_INPUT:
        problem = await service.problem(method, path, status)
        assert problem.parameter == parameter, (path, problem)
        assert problem.instance == path.partition("?")[0]
    # A wrong method says which methods would do.
    _, _, _, headers = await service.request("POST", "/api/status")
    assert "GET" in headers["Allow"].split(",")
    assert "POST" not in headers["Allow"].split(",")
    # The store recorded nothing for any of them.
    assert (await service.get("/api/events?type=JobTriggered", EventPage)).count == 0


async def test_bad_acknowledge_bodies_are_refused(start: Start) -> None:
    service = await start()
    alert_id = await service.take_down()
    path = f"/api/alerts/{alert_id}/acknowledge"
    json_type = {"Content-Type": "application/json"}
    for data, parameter in [
        (b"not json", "body"),
        (b'{"note": "x"', "body"),
        (b'{"colour": "red"}', "body"),
        (b'{"note": 5}', "body"),
        (b"[1, 2]", "body"),
        (b'"looking"', "body"),
        (json.dumps({"note": "x" * 1001}).encode(), "note"),
        (json.dumps({"actor": "y" * 1001}).encode(), "actor"),
        (b'{"actor": "a\\u0000b"}', "actor"),  # no database text column holds a NUL
        (b'{"note": "\\u0000"}', "note"),
    ]:
        problem = await service.problem("POST", path, 400, headers=json_type, data=data)
        assert problem.parameter == parameter, (data, problem)
    # More than the app accepts in a body: refused before it is read.
    problem = await service.problem("POST", path, 413, headers=json_type, data=b" " * 100_000)
    assert "Too Large" in problem.title
    # None of it acknowledged anything.
    alert = (await service.get("/api/alerts?provider=Down", AlertList)).alerts[0]
    assert (alert.id, alert.acknowledged) == (alert_id, False)


# Values no query parameter should choke on.
ODD_VALUES = ["", "x", "-1", "0", "1e999", "nan", "-inf", "9" * 40, "true", "☃" * 300, "%00", "'"]


async def test_no_query_value_makes_a_server_error(start: Start) -> None:
    service = await start()
    await service.trigger()
    for endpoint in ENDPOINTS:
        if endpoint.method != "GET":
            continue
        for param in endpoint.params:
            if param.where != "query":
                continue
            for value in ODD_VALUES:
                path = filled(endpoint.path, 1)
                status, content_type, body, _ = await service.request(
                    "GET", f"{path}?{param.name}={value}"
                )
                # /ws/live takes good values, then refuses a GET that is no upgrade.
                good = 426 if endpoint.websocket else 200
                # A filter naming a provider (or one of its regions) may say there is none
                # (404), where declared.
                named = param.name in ("provider", "region")
                unknown = (404,) if named and 404 in endpoint.errors else ()
                expected = (good, 400, *unknown)
                assert status in expected, (path, param.name, value, status, body[:300])
                if status in (400, 404):
                    assert content_type == PROBLEM_TYPE
                    named = msgspec.json.decode(body, type=Problem).parameter
                    assert named == (param.name if status == 400 else None), (path, value)
                elif endpoint.websocket:
                    assert content_type == PROBLEM_TYPE
                else:
                    assert endpoint.response is not None
                    msgspec.json.decode(body, type=endpoint.response)


async def test_odd_bytes_in_paths_and_headers_are_client_errors(start: Start) -> None:
    """Bytes that are not UTF-8 in a path or header: a 4xx, never a 500."""
    service = await start(environ={"CRYPTOMON_API_TOKEN": TOKEN})
    server = service.client.server
    for request_line, extra in [
        (b"GET /api/providers/%ff HTTP/1.1", b""),
        (b"GET /api/providers/%ED%A0%80 HTTP/1.1", b""),
        (b"GET /api/providers/\xff\xfe HTTP/1.1", b""),
        (b"GET /api/alerts?provider=%ff%fe HTTP/1.1", b""),
        (b"POST /api/scheduler/trigger/%ff HTTP/1.1", b""),
        (b"POST /api/scheduler/trigger/health_checks HTTP/1.1", b"Authorization: Bearer \xff\r\n"),
        (b"POST /api/alerts/1/acknowledge HTTP/1.1", b"Authorization: Bearer s3cret-token\xe9\r\n"),
    ]:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            request_line
            + b"\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n"
            + extra
            + b"\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            response = await reader.read()
        writer.close()
        await writer.wait_closed()
        status = int(response.split(b" ", 2)[1])
        assert status < 500, (request_line, extra, response[:500])
        if extra:
            assert status == 401, response[:500]


# ---- auth ----------------------------------------------------------------------


async def test_with_a_token_writes_need_the_bearer_token(start: Start, tmp_path: Path) -> None:
    service = await start(environ={"UP_API_KEY": API_KEY, "CRYPTOMON_API_TOKEN": TOKEN})
    writes = [
        ("POST", "/api/scheduler/trigger/health_checks"),
        ("POST", "/api/alerts/1/acknowledge"),
        ("POST", "/api/audit/verify"),
    ]
    for method, path in writes:
        for headers in [
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer ünïcode"},
        ]:
            await service.problem(method, path, 401, headers=headers)
            _, _, _, got = await service.request(method, path, headers=headers)
            assert got["WWW-Authenticate"].startswith("Bearer")
    assert (await service.get("/api/events?type=JobTriggered", EventPage)).count == 0

    triggered = await service.trigger(token=TOKEN)
    assert triggered.triggered_by == "token"
    # Authorised, the acknowledge gets as far as finding no such alert.
    await service.problem(
        "POST", "/api/alerts/987654/acknowledge", 404, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    for _ in range(2):
        await service.trigger(token=TOKEN)
    [alert] = (await service.get("/api/alerts?provider=Down&open=true", AlertList)).alerts
    status, body = await service.acknowledge(alert.id, {"note": "on it"}, token=TOKEN)
    assert status == 200, body
    assert msgspec.json.decode(body, type=Acknowledged).alert.acknowledged_by == "token"
    assert (await walk_afresh(service, token=TOKEN))["ok"] is True

    # Reads need no token; the token itself shows up nowhere.
    for endpoint in ENDPOINTS:
        if endpoint.method == "GET":
            await service.request("GET", filled(endpoint.path, alert.id))
    config = await service.get_json("/api/config/stats")
    assert config["api_token_configured"] is True
    assert service.bodies
    for body in service.bodies:
        assert TOKEN.encode() not in body
    await service.client.close()
    assert TOKEN.encode() not in database_bytes(tmp_path)


async def test_without_a_token_loopback_may_write(start: Start) -> None:
    service = await start()
    config = await service.get_json("/api/config/stats")
    assert config["api_token_configured"] is False
    triggered = await service.trigger()
    assert triggered.triggered_by == "local"
    assert triggered.tasks_run == 3


async def test_without_a_token_other_addresses_may_not_write(
    tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> None:
    """A request that reaches the app from 10.0.0.7 (as a proxy's middleware would
    rewrite it) is refused with 403, even though the test client is on loopback."""
    config = tmp_path / "c.toml"
    config.write_text(config_text(standin))
    settings = Settings.from_config(
        load_config(config), database=tmp_path / "x.db", environ={}, probing=False
    )
    app = create_app(settings)

    @web.middleware
    async def from_elsewhere(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await handler(request.clone(remote="10.0.0.7"))

    app.middlewares.append(from_elsewhere)
    service = Service(await aiohttp_client(app))
    writes = ("/api/scheduler/trigger/health_checks", "/api/alerts/1/acknowledge")
    for path in (*writes, "/api/audit/verify"):
        problem = await service.problem("POST", path, 403)
        assert "CRYPTOMON_API_TOKEN" in problem.detail
    assert (await service.get("/api/status", SystemStatus)).total_apis == 3


# ---- CORS ----------------------------------------------------------------------


async def test_cors_allows_exactly_the_configured_origins(start: Start) -> None:
    service = await start(server='[server]\ncors_origins = ["https://good.example"]\n')
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    }
    path = "/api/scheduler/trigger/health_checks"
    status, _, _, headers = await service.request(
        "OPTIONS", path, headers={"Origin": "https://good.example", **preflight}
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://good.example"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "AUTHORIZATION" in headers["Access-Control-Allow-Headers"].upper()
    assert "Access-Control-Allow-Credentials" not in headers

    status, _, _, headers = await service.request(
        "GET", "/api/status", headers={"Origin": "https://good.example"}
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://good.example"
    assert "Access-Control-Allow-Credentials" not in headers

    status, _, _, headers = await service.request(
        "OPTIONS", path, headers={"Origin": "https://evil.example", **preflight}
    )
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers
    # Behind the same guard as every route: a problem document like any refusal.
    assert headers["Content-Type"].startswith("application/problem+json")
    status, _, _, headers = await service.request(
        "GET", "/api/status", headers={"Origin": "https://evil.example"}
    )
    assert status == 200
    assert "Access-Control-Allow-Origin" not in headers


async def test_without_cors_origins_no_origin_is_allowed(start: Start) -> None:
    service = await start()
    _, _, _, headers = await service.request(
        "GET", "/api/status", headers={"Origin": "https://good.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers


# ---- the story: down, alert, acknowledge ----------------------------------------


async def test_a_provider_going_down_is_offline_with_an_alert_to_acknowledge(
    start: Start,
) -> None:
    service = await start()
    for round_ in (1, 2):
        await service.trigger()
        down = await service.get("/api/providers/Down", ProviderView)
        # Failed from its first probe: too few probes to judge from a ratio (5), not yet
        # three failures in a row. No alert.
        assert down.status == "unknown", round_
        assert down.consecutive_failures == round_
        assert (await service.get("/api/alerts?provider=Down", AlertList)).alerts == []
    await service.trigger()

    down = await service.get("/api/providers/Down", ProviderView)
    assert down.status == "offline"
    assert down.consecutive_failures == 3
    assert down.last_error is not None
    assert down.last_error.error_type == "connection_refused"
    status = await service.get("/api/status", SystemStatus)
    assert (status.total_apis, status.online, status.offline) == (3, 1, 1)
    assert status.system_health == "unhealthy"
    assert status.open_alerts >= 1
    listed = await service.get("/api/providers?status=offline", ProviderList)
    assert [p.name for p in listed.providers] == ["Down"]

    [alert] = (await service.get("/api/alerts?provider=Down", AlertList)).alerts
    assert (alert.kind, alert.severity, alert.acknowledged) == ("offline", "critical", False)
    assert alert.resolved_at is None
    [open_alert] = (await service.get("/api/alerts?provider=Down&open=true", AlertList)).alerts
    assert open_alert.id == alert.id
    critical = await service.get("/api/alerts?severity=critical&acknowledged=false", AlertList)
    assert alert.id in [a.id for a in critical.alerts]

    status_code, body = await service.acknowledge(alert.id, {"note": "looking", "actor": "alice"})
    assert status_code == 200, body
    acknowledged = msgspec.json.decode(body, type=Acknowledged)
    assert acknowledged.success
    assert acknowledged.alert.id == alert.id
    assert acknowledged.alert.acknowledged
    assert acknowledged.alert.acknowledged_by == "alice"
    assert acknowledged.alert.note == "looking"
    assert acknowledged.alert.acknowledged_at is not None

    [listed_alert] = (
        await service.get("/api/alerts?provider=Down&acknowledged=true", AlertList)
    ).alerts
    assert (listed_alert.id, listed_alert.acknowledged_by) == (alert.id, "alice")
    assert listed_alert.note == "looking"
    unacknowledged = await service.get("/api/alerts?provider=Down&acknowledged=false", AlertList)
    assert alert.id not in [a.id for a in unacknowledged.alerts]

    again = await service.problem(
        "POST",
        f"/api/alerts/{alert.id}/acknowledge",
        409,
        headers={"Content-Type": "application/json"},
        data=b'{"actor": "bob"}',
    )
    assert "alice" in again.detail

    page = await service.get("/api/events?type=AlertAcknowledged", EventPage)
    [event] = page.events
    assert event.actor == "alice"
    assert event.payload["actor"] == "alice"
    assert event.payload["note"] == "looking"
    assert event.position == acknowledged.position


async def test_acknowledge_without_a_body_records_the_local_actor(start: Start) -> None:
    service = await start()
    alert_id = await service.take_down()
    status, body = await service.acknowledge(alert_id)
    assert status == 200, body
    alert = msgspec.json.decode(body, type=Acknowledged).alert
    assert (alert.acknowledged_by, alert.note) == ("local", None)


async def test_acknowledging_twice_at_once_is_one_acknowledgement_and_one_409(
    start: Start,
) -> None:
    service = await start()
    alert_id = await service.take_down()
    statuses = await asyncio.gather(
        *(service.acknowledge(alert_id, {"actor": actor}) for actor in ("alice", "bob", "carol"))
    )
    # The losers may be refused by the check or by the store (same group commit): 409 both ways.
    assert sorted(status for status, _ in statuses) == [200, 409, 409], statuses
    assert (await service.get("/api/events?type=AlertAcknowledged", EventPage)).count == 1


# ---- the event log ----------------------------------------------------------------


async def test_events_page_with_a_cursor_and_filter_by_type_and_stream(start: Start) -> None:
    service = await start()
    await service.trigger()
    await service.trigger("market_data")
    head = service.app[STORE].head
    assert head >= 8

    positions: list[int] = []
    after = 0
    pages = 0
    while True:
        page = await service.get(f"/api/events?after={after}&limit=3", EventPage)
        assert page.head == head
        assert page.count == len(page.events) <= 3
        positions += [e.position for e in page.events]
        pages += 1
        if page.next_after is None:
            break
        assert page.next_after == page.events[-1].position
        after = page.next_after
    assert positions == list(range(1, head + 1))
    assert pages >= head // 3

    everything = await service.get("/api/events?limit=1000", EventPage)
    assert everything.count == head
    assert everything.next_after is None
    assert [e.recorded_at for e in everything.events] == sorted(
        e.recorded_at for e in everything.events
    )

    registered = await service.get("/api/events?type=ProviderRegistered", EventPage)
    assert registered.count == 3
    assert {e.type for e in registered.events} == {"ProviderRegistered"}
    assert {e.payload["provider"] for e in registered.events} == {"Up", "Down", "Limited"}

    probes = [e for e in everything.events if e.type == "ProbeRecorded"]
    stream = probes[0].stream
    in_stream = [e for e in everything.events if e.stream == stream]
    page = await service.get(f"/api/events?stream={stream}&limit=1", EventPage)
    assert [e.position for e in page.events] == [in_stream[0].position]
    assert page.next_after == in_stream[0].position
    rest = await service.get(f"/api/events?stream={stream}&after={page.next_after}", EventPage)
    assert [e.position for e in rest.events] == [e.position for e in in_stream[1:]]
    assert [e.version for e in rest.events] == list(range(2, len(in_stream) + 1))
    both = await service.get(f"/api/events?stream={stream}&type=ProbeRecorded", EventPage)
    assert {(e.stream, e.type) for e in both.events} == {(stream, "ProbeRecorded")}
    assert (await service.get("/api/events?stream=nobody", EventPage)).count == 0
    assert (await service.get(f"/api/events?after={head}", EventPage)).events == []


async def caught_up(service: Service) -> Any:
    """GET /api/audit/verify until the chain check has reached the log's head."""
    deadline = time.monotonic() + 30
    while True:
        report = await service.get_json("/api/audit/verify")
        if report["last_position"] == service.app[STORE].head:
            return report
        assert time.monotonic() < deadline, f"the chain check never reached the head: {report}"
        await asyncio.sleep(0.02)


async def walk_afresh(service: Service, token: str | None = None) -> Any:
    status, _, body, _ = await service.request(
        "POST", "/api/audit/verify", headers=service._headers(token)
    )
    assert status == 200, body[:500]
    return json.loads(body)


def edit_payload(database: Path, position: int, old: bytes, new: bytes) -> None:
    """What an outside tool would do to a committed row: change its payload in place."""
    with sqlite3.connect(database) as conn:
        [payload] = conn.execute("SELECT payload FROM events WHERE position = ?", (position,))
        assert old in payload[0]
        edited = payload[0].replace(old, new)
        conn.execute("UPDATE events SET payload = ? WHERE position = ?", (edited, position))


async def test_audit_verify_answers_from_the_check_that_follows_the_head(
    start: Start, tmp_path: Path
) -> None:
    service = await start()
    await service.trigger()
    first = await caught_up(service)
    head = service.app[STORE].head
    assert (first["ok"], first["status"]) == (True, "intact")
    assert first["count"] == first["last_position"] == first["head"] == head
    assert first["last_hash"] == service.app[STORE].last_hash
    assert first["verified_at"].endswith("Z")
    assert (first["broken_at"], first["reason"], first["walking"]) == (None, None, False)
    assert first["full_walk_at"] is None
    for _ in range(2):
        await service.trigger()
    later = await caught_up(service)
    assert later["ok"] is True and later["last_position"] > head

    # An outside tool edits a row the check verified already. GET answers from the
    # check, which walks on from its position and never over that row again...
    probes = await service.get("/api/events?type=ProbeRecorded&limit=1", EventPage)
    edited = probes.events[0].position
    edit_payload(tmp_path / "x.db", edited, b'"provider":"', b'"provider":"X')
    assert (await service.get_json("/api/audit/verify"))["status"] == "intact"
    assert (await service.request("GET", "/health"))[0] == 200
    # ...and a fresh walk finds it.
    walked = await walk_afresh(service)
    assert (walked["ok"], walked["status"], walked["broken_at"]) == (False, "broken", edited)
    assert walked["count"] == walked["last_position"] == edited - 1
    assert "hash does not match" in walked["reason"]
    assert walked["full_walk_at"].endswith("Z") and walked["walking"] is False
    assert await service.get_json("/api/audit/verify") == walked
    health = await service.get_json("/health", status=503)
    [problem] = health["problems"]
    assert problem["component"] == "history"
    assert f"corrupt at position {edited}" in problem["detail"]
    assert health["components"]["database"]["history"] == "broken"
    # New commits are not verified past a break: it stays broken where it was found.
    await service.trigger()
    still = await service.get_json("/api/audit/verify")
    assert (still["status"], still["broken_at"], still["head"]) == (
        "broken",
        edited,
        service.app[STORE].head,
    )

    # Undone, a fresh walk finds the chain intact, and the check follows the head again.
    edit_payload(tmp_path / "x.db", edited, b'"provider":"X', b'"provider":"')
    mended = await walk_afresh(service)
    assert (mended["ok"], mended["status"], mended["broken_at"]) == (True, "intact", None)
    assert mended["last_position"] == service.app[STORE].head
    assert (await service.request("GET", "/health"))[0] == 200
    await service.trigger()
    assert (await caught_up(service))["ok"] is True


async def test_two_fresh_walks_at_once_are_one_walk(start: Start) -> None:
    service = await start()
    await service.trigger()
    chain = service.app[READ_MODELS].chain
    async with chain.rows_moving():  # as archiving does: no walk starts meanwhile
        posts = [
            asyncio.create_task(service.request("POST", "/api/audit/verify")) for _ in range(2)
        ]
        deadline = time.monotonic() + 30
        while chain.waiting < 2:
            assert time.monotonic() < deadline, "the two requests never both waited"
            await asyncio.sleep(0.01)
        running = await service.get_json("/api/audit/verify")
        assert running["walking"] is True
    answers = await asyncio.gather(*posts)
    assert [status for status, *_ in answers] == [200, 200]
    first, second = (json.loads(body) for _, _, body, _ in answers)
    assert first == second
    assert (first["ok"], first["walking"]) == (True, False)
    assert first["last_position"] == service.app[STORE].head
    assert chain.full_walks == 1


# ---- logs ----------------------------------------------------------------------


async def test_logs_are_newest_first_with_limit_and_hours(start: Start, tmp_path: Path) -> None:
    # Two probes of Up recorded two hours ago, written by the store before the app starts.
    long_ago = time.time() - 2 * 3600
    old = await EventStore.open(tmp_path / "x.db", clock=lambda: long_ago)
    try:
        for outcome in ("success", "failed"):
            await old.append(
                "provider:Up",
                [ProbeRecorded("Up", "health", "/healthy", outcome, long_ago, latency_ms=5.0)],
            )
    finally:
        await old.close()

    service = await start()
    for _ in range(2):
        await service.trigger()
    await service.trigger("market_data")

    def newest_first(page: LogPage) -> None:
        assert page.count == len(page.logs)
        positions = [row["position"] for row in page.logs]
        assert positions == sorted(positions, reverse=True), positions

    connection = await service.get("/api/logs/connection", LogPage)
    newest_first(connection)
    # 3 providers x 2 rounds, less Limited's second (blocked) round, plus the two old ones.
    assert connection.count == 7
    assert {row["status"] for row in connection.logs} >= {"success", "failed", "rate_limited"}
    assert connection.logs[-1]["position"] == 1
    recent = await service.get("/api/logs/connection?hours=1", LogPage)
    assert recent.count == 5
    assert all(row["position"] > 2 for row in recent.logs)
    assert recent.hours == 1
    limited = await service.get("/api/logs/connection?limit=2", LogPage)
    assert [r["position"] for r in limited.logs] == [r["position"] for r in connection.logs[:2]]
    only_up = await service.get("/api/logs/connection?provider=Up", LogPage)
    assert {row["provider"] for row in only_up.logs} == {"Up"}
    for name in ("Up", "Down", "Limited"):  # the limit counts that provider's rows only
        newest = await service.get(f"/api/logs/connection?provider={name}&limit=1", LogPage)
        assert [row["provider"] for row in newest.logs] == [name]
    for name in ("Limited", "Nobody"):
        page = await service.get(f"/api/logs/rate_limit?provider={name}", LogPage)
        assert {row["provider"] for row in page.logs} == ({name} if name == "Limited" else set())

    failure = await service.get("/api/logs/failure?hours=1", LogPage)
    newest_first(failure)
    assert {row["provider"] for row in failure.logs} == {"Down", "Limited"}
    assert all(row["status"] != "success" for row in failure.logs)
    assert {row["error_type"] for row in failure.logs if row["provider"] == "Down"} == {
        "connection_refused"
    }
    assert (await service.get("/api/logs/failure?hours=3", LogPage)).count == failure.count + 1

    collection = await service.get("/api/logs/collection", LogPage)
    newest_first(collection)
    [row] = collection.logs
    assert (row["provider"], row["endpoint"], row["status"]) == (
        "Up",
        "/healthy?ids=bitcoin",
        "success",
    )

    rate_limit = await service.get("/api/logs/rate_limit?limit=10", LogPage)
    newest_first(rate_limit)
    assert rate_limit.count >= 2
    assert rate_limit.logs[0]["reason"] == "blocked"
    assert {row["provider"] for row in rate_limit.logs} == {"Limited"}
    assert (await service.get("/api/logs/rate_limit?limit=1", LogPage)).count == 1


# ---- restart -------------------------------------------------------------------


async def test_a_restart_on_the_same_database_gives_the_same_answers(
    start: Start, tmp_path: Path
) -> None:
    first = await start()
    await first.trigger("market_data")
    alert_id = await first.take_down()
    status, body = await first.acknowledge(alert_id, {"note": "looking", "actor": "alice"})
    assert status == 200, body
    paths = ["/api/providers", "/api/providers/Down", "/api/status", "/api/alerts"]
    before = {path: without_wall_clock(await first.get_json(path)) for path in paths}
    head = first.app[STORE].head
    await first.client.close()

    second = await start(config=tmp_path / "cryptomon.toml")
    assert second.app[STORE].head == head  # the same config registers nothing new
    report = second.app[READ_MODELS].load_report
    assert report is not None
    assert report.tail_events == 0  # the first app snapshotted as it stopped
    after = {path: without_wall_clock(await second.get_json(path)) for path in paths}
    assert after == before
    assert after["/api/alerts"]["alerts"][0]["acknowledged_by"] == "alice"
    # The acknowledgement survived: acknowledging again is still a conflict.
    status, _ = await second.acknowledge(alert_id, {"actor": "bob"})
    assert status == 409


# ---- removal keeps history ------------------------------------------------------


async def test_a_removed_provider_leaves_the_listing_but_answers_marked_removed(
    start: Start, tmp_path: Path, standin: StandIn
) -> None:
    service = await start(reloadable=True)
    await service.take_down()
    (tmp_path / "cryptomon.toml").write_text(config_text(standin, only_up=True))
    status, _, body, _ = await service.request("POST", "/api/config/reload")
    assert status == 200, body
    assert sorted(msgspec.json.decode(body, type=ConfigReloaded).removed) == ["Down", "Limited"]
    await service.trigger()  # Up alone is probed now

    listed = await service.get("/api/providers", ProviderList)
    assert [p.name for p in listed.providers] == ["Up"]  # the removed are no ghosts
    everyone = await service.get("/api/providers?removed=true", ProviderList)
    marked = {p.name: (p.removed, p.removed_at is not None) for p in everyone.providers}
    assert marked == {"Up": (False, False), "Down": (True, True), "Limited": (True, True)}
    down = await service.get("/api/providers/Down", ProviderView)
    assert (down.removed, down.status, down.consecutive_failures) == (True, "offline", 3)
    assert down.removed_at == next(p for p in everyone.providers if p.name == "Down").removed_at
    assert down.last_error is not None and down.last_error.error_type == "connection_refused"
    stats = await service.get("/api/providers/Down/stats", ProviderStats)
    assert (stats.removed, stats.removed_at) == (True, down.removed_at)
    assert stats.connection_stats.total_attempts == 3  # its history, no probe since
    series = await service.get("/api/providers/Down/series", ProviderSeries)
    assert series.removed and sum(point.probes for point in series.points) == 3
    up = await service.get("/api/providers/Up/stats", ProviderStats)
    assert (up.removed, up.removed_at) == (False, None)

    # Its alerts resolved; the summaries and /metrics count the current providers only.
    assert (await service.get("/api/alerts?provider=Down&open=true", AlertList)).alerts == []
    summary = await service.get("/api/status", SystemStatus)
    assert (summary.total_apis, summary.online, summary.offline) == (1, 1, 0)
    assert summary.open_alerts == 0
    health = await service.get("/health", Health)
    assert health.components.providers.total == 1
    limits = await service.get_json("/api/rate-limits")
    assert [limit["provider"] for limit in limits["rate_limits"]] == ["Up"]
    _, _, text, _ = await service.request("GET", "/metrics")
    assert 'provider="Up"' in text.decode()
    assert 'provider="Down"' not in text.decode() and 'provider="Limited"' not in text.decode()


# ---- secrets -------------------------------------------------------------------


async def test_an_api_key_is_masked_and_never_stored_or_served(
    start: Start, tmp_path: Path
) -> None:
    service = await start()
    await service.trigger()
    await service.trigger("market_data")
    up = await service.get("/api/providers/Up", ProviderView)
    assert up.api_key == API_KEY[:4] + "…"
    listed = await service.get("/api/providers", ProviderList)
    assert {p.name: p.api_key for p in listed.providers} == {
        "Up": API_KEY[:4] + "…",
        "Down": None,
        "Limited": None,
    }
    for endpoint in ENDPOINTS:
        if endpoint.method == "GET":
            await service.request("GET", filled(endpoint.path, 1))
    for path in ("/api/logs/collection", "/api/logs/connection", "/api/events?limit=1000"):
        await service.request("GET", path)
    for body in service.bodies:
        assert API_KEY.encode() not in body
        assert API_KEY[:8].encode() not in body
    await service.client.close()
    assert API_KEY.encode() not in database_bytes(tmp_path)


async def test_a_cached_answer_never_hides_the_callers_own_write(start: Start) -> None:
    service = await start()
    store = service.app[STORE]
    await service.get_json("/api/status")  # now cached for up to a second
    await service.trigger()
    status = await service.get_json("/api/status")
    assert status["event_position"] == store.head  # the caller's own write shows at once
