"""Every write route in the route table refuses a client not allowed to write.

The walk reads `ENDPOINTS` itself, so a write route added later is covered
without touching this file."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from cryptomon.config import load_config
from cryptomon.http.routes import Endpoint
from cryptomon.http.settings import Settings
from cryptomon.service.app import ENDPOINTS, create_app

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

TOKEN = "s3cret-token"
WRITES = [endpoint for endpoint in ENDPOINTS if endpoint.write]


def app_with(tmp_path: Path, server: str, environ: dict[str, str]) -> web.Application:
    path = tmp_path / "writes.toml"
    path.write_text(f"providers = []\n[server]\n{server}\n")
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "writes.db", environ=environ, probing=False
    )
    return create_app(settings)


def concrete(endpoint: Endpoint) -> str:
    """The route's path with each path parameter filled in: the check comes first."""
    return re.sub(r"\{[^}]+\}", "1", endpoint.path)


def test_the_table_has_write_routes() -> None:
    assert {e.path for e in WRITES} >= {
        "/api/alerts/{alert_id}/acknowledge",
        "/api/scheduler/trigger/{job_id}",
        "/api/audit/verify",
    }


async def test_every_write_route_without_the_token_is_refused_with_401(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(app_with(tmp_path, "", {"CRYPTOMON_API_TOKEN": TOKEN}))
    for endpoint in WRITES:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}):
            response = await client.request(endpoint.method, concrete(endpoint), headers=headers)
            assert response.status == 401, (endpoint.path, headers, await response.text())
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="cryptomon"'
            assert (await response.json())["status"] == 401


async def test_every_write_route_from_a_remote_client_without_a_token_is_refused_with_403(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(app_with(tmp_path, 'trusted_proxies = ["127.0.0.1"]', {}))
    for endpoint in WRITES:
        response = await client.request(
            endpoint.method, concrete(endpoint), headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert response.status == 403, (endpoint.path, await response.text())
        assert "CRYPTOMON_API_TOKEN" in (await response.json())["detail"]
