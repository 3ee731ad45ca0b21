"""The route table's parameter declarations parse and check each request: a bad
value is a 400 problem naming the parameter, in the words handlers used to write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cryptomon.config import load_config
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    path = tmp_path / "params.toml"
    path.write_text("providers = []\n")
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "params.db", environ={}, probing=False
    )
    return await aiohttp_client(create_app(settings))


@pytest.mark.parametrize(
    ("method", "path", "name", "detail"),
    [
        (
            "GET",
            "/api/alerts?hours=0",
            "hours",
            "hours must be between 0.0166667 and 9600, not '0'",
        ),
        ("GET", "/api/alerts?hours=x", "hours", "hours must be a number, not 'x'"),
        ("GET", "/api/alerts?limit=5001", "limit", "limit must be between 1 and 5000, not 5001"),
        ("GET", "/api/alerts?open=maybe", "open", "open must be true or false, not 'maybe'"),
        ("GET", "/api/alerts?limit=1&limit=2", "limit", "limit was given 2 times; give it once"),
        (
            "GET",
            "/api/alerts?severity=loud",
            "severity",
            "severity must be one of warning, critical; not 'loud'",
        ),
        ("GET", "/api/logs/nope", "log_type", "log_type must be one of"),
        ("GET", "/api/providers?status=", "status", "status must be 1 to 30 characters"),
        ("GET", f"/api/events?type={'x' * 61}", "type", "type must be 1 to 60 characters"),
        ("GET", "/api/events?type=Nope", "type", "type must be one of"),
        # Of several bad ones, the same is named as before: the type's length in turn,
        # its value once all are read.
        ("GET", f"/api/events?type=Nope&stream={'s' * 201}", "stream", "stream must be 1 to 200"),
        (
            "POST",
            "/api/alerts/abc/acknowledge",
            "alert_id",
            "alert ids are whole numbers, not 'abc'",
        ),
        ("POST", "/api/alerts/0/acknowledge", "alert_id", "no alert has id 0"),
    ],
)
async def test_a_bad_parameter_is_a_problem_naming_it(
    client: Client, method: str, path: str, name: str, detail: str
) -> None:
    response = await client.request(method, path)
    assert response.status == 400, await response.text()
    problem = await response.json()
    assert problem["status"] == 400
    assert problem["parameter"] == name, problem
    assert problem["detail"].startswith(detail), problem


async def test_defaults_come_from_the_declaration(client: Client) -> None:
    assert (await (await client.get("/api/alerts")).json())["count"] == 0
    assert (await (await client.get("/api/status/metrics")).json())["hours"] == 1
    assert (await (await client.get("/api/logs/failure")).json())["hours"] == 24
