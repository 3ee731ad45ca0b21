"""Regions on the surfaces: REST's `regions` object and `?region=`, the service's own
alert over REST and the live feed, the `region` label on /metrics, the feed's regional
fields and the OpenAPI document, through the real app and real clients.

Every app here is `create_app(Settings.from_config(...))` over a config in tmp_path and a
SQLite database in tmp_path; nothing probes (`probing=False`). The tests append the events
the instances of several regions would have recorded (`ProbeRecorded.region`,
`RegionLost`, `RegionJoined`) to the app's own event store, then wait for the read models
to reach the log's head.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from standins import closed_port

from cryptomon.config import load_config
from cryptomon.events.types import (
    Event,
    ProbeKind,
    ProbeOutcome,
    ProbeRecorded,
    RegionJoined,
    RegionLost,
)
from cryptomon.http.errors import PROBLEM_TYPE
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.schemas import ProviderStats, ProviderView
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def config_text() -> str:
    """Edge is probed from two regions, Plain by an instance without one; neither is ever
    probed here (closed ports): the tests append their probes."""
    gone = f"http://127.0.0.1:{closed_port()}"
    return f"""
[websocket]
status_interval = "200ms"

[[providers]]
name = "Edge"
category = "exchanges"
base_url = "{gone}"
interval = "1h"
rate_limit = {{ requests = 100, per = "60s" }}

[[providers]]
name = "Plain"
category = "news"
base_url = "{gone}"
interval = "1h"
"""


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    path = tmp_path / "regions.toml"
    path.write_text(config_text())
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "regions.db", environ={}, probing=False
    )
    return await aiohttp_client(create_app(settings))


def probe(
    provider: str,
    at: float,
    outcome: ProbeOutcome = "success",
    region: str | None = None,
    kind: ProbeKind = "health",
) -> ProbeRecorded:
    failed = outcome != "success"
    return ProbeRecorded(
        provider,
        kind,
        "/" if kind == "health" else "/data",
        outcome,
        at,
        latency_ms=None if failed else 120.0,
        http_status=None if failed else 200,
        error_kind="timeout" if outcome == "timeout" else None,
        error_message="timed out" if outcome == "timeout" else None,
        region=region,
    )


def stream_of(event: Event) -> str:
    if isinstance(event, RegionLost | RegionJoined):
        return f"region:{event.region}"
    return f"provider:{getattr(event, 'provider')}"  # noqa: B009


async def append(client: Client, *events: Event) -> None:
    """Record the events as the instances would, and wait until the read models have them."""
    app = client.app
    assert app is not None
    store = app[STORE]
    for event in events:
        await store.append(stream_of(event), [event])
    async with asyncio.timeout(10):
        await app[READ_MODELS].wait_for(store.head)


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    async with client.get(path) as response:
        body = await response.read()
        assert response.status == status, (path, response.status, body[:500])
        expected = "application/json" if status < 400 else PROBLEM_TYPE
        assert response.content_type == expected, (path, response.content_type)
        return json.loads(body)


def moment(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def regional_outage(client: Client) -> float:
    """Edge answers from eu-west and times out from us-east (offline there, three in a
    row); Plain answers an instance without a region. Returns when it began."""
    now = time.time() - 120
    await append(
        client,
        probe("Edge", now, region="eu-west"),
        *(probe("Edge", now + 1 + n, "timeout", region="us-east") for n in range(3)),
        probe("Plain", now + 5),
    )
    return now


# ---- REST: the regions object ------------------------------------------------------


async def test_a_provider_shows_each_regions_view_and_the_regions_its_status_comes_from(
    client: Client,
) -> None:
    began = await regional_outage(client)
    edge = await get_json(client, "/api/providers/Edge")
    msgspec.convert(edge, ProviderView)  # the declared shape
    assert edge["status"] == "degraded"
    assert edge["status_regions"] == ["us-east"]
    assert list(edge["regions"]) == ["eu-west", "us-east"]
    us, eu = edge["regions"]["us-east"], edge["regions"]["eu-west"]
    assert us["status"] == "offline" and eu["status"] == "online"
    assert us["consecutive_failures"] == 3 and eu["consecutive_failures"] == 0
    assert "3 consecutive failures" in us["details"]
    assert us["lost"] is False and us["lost_at"] is None
    assert us["last_probe_at"].endswith("Z") and eu["last_status_change"].endswith("Z")
    assert abs(moment(us["last_probe_at"]) - (began + 3)) < 0.01
    assert abs(moment(eu["last_probe_at"]) - began) < 0.01
    # The listing carries the same.
    listed = await get_json(client, "/api/providers")
    by_name = {p["name"]: p for p in listed["providers"]}
    assert by_name["Edge"]["regions"] == edge["regions"]
    # A provider probed without regions answers as before, with an empty object.
    plain = await get_json(client, "/api/providers/Plain")
    assert plain["regions"] == {} and plain["status_regions"] == []
    assert plain["status"] == "online"
    assert set(plain) == set(edge)


async def test_stats_take_a_region_and_refuse_one_without_data(client: Client) -> None:
    began = await regional_outage(client)
    # A collection probe from a third region: it has metrics there, and no status.
    await append(client, probe("Edge", began + 10, region="ap-south", kind="collection"))

    async def stats(query: str) -> ProviderStats:
        return msgspec.convert(
            await get_json(client, f"/api/providers/Edge/stats{query}"), ProviderStats
        )

    overall = await stats("")
    assert overall.region is None
    assert overall.connection_stats.total_attempts == 4
    eu = await stats("?region=eu-west&hours=1")
    assert eu.region == "eu-west"
    assert (eu.connection_stats.total_attempts, eu.connection_stats.uptime) == (1, 100.0)
    assert eu.uptime_24h == 100.0 and eu.failure_count == 0
    us = await stats("?region=us-east")
    assert (us.connection_stats.timeout, us.connection_stats.uptime) == (3, 0.0)
    assert us.failure_count == 3
    ap = await stats("?region=ap-south")
    assert ap.connection_stats.total_attempts == 0
    assert ap.data_collection_stats.total_attempts == 1

    unknown = await get_json(client, "/api/providers/Edge/stats?region=sa-east", 404)
    assert unknown["type"].endswith("unknown-region")
    assert "'sa-east'" in unknown["detail"]
    assert "ap-south, eu-west, us-east" in unknown["detail"]
    plain = await get_json(client, "/api/providers/Plain/stats?region=eu-west", 404)
    assert "no probe of it carried a region" in plain["detail"]
    for bad in ("EU-West", "-eu", "eu_west", "eu%20west", "eu%0A"):
        problem = await get_json(client, f"/api/providers/Edge/stats?region={bad}", 400)
        assert problem["parameter"] == "region", bad
        assert "lower-case letters, digits and dashes" in problem["detail"], bad
    for bad in ("", "a" * 33, "eu-west&region=us-east"):
        problem = await get_json(client, f"/api/providers/Edge/stats?region={bad}", 400)
        assert problem["parameter"] == "region", bad
    # An unknown provider is still the provider's 404, whatever the region.
    missing = await get_json(client, "/api/providers/Nobody/stats?region=eu-west", 404)
    assert missing["type"].endswith("unknown-provider")


# ---- REST: the service's own alert -------------------------------------------------


async def test_the_region_alert_has_no_provider_filters_out_and_can_be_acknowledged(
    client: Client,
) -> None:
    began = await regional_outage(client)
    await append(client, RegionLost(region="us-east", instance="host-b:7860", lost_at=began + 30))
    edge = await get_json(client, "/api/providers/Edge")
    assert edge["regions"]["us-east"]["lost"] is True
    assert edge["regions"]["us-east"]["status"] == "unknown"
    assert edge["regions"]["us-east"]["lost_at"].endswith("Z")
    assert edge["status"] == "online"  # only eu-west reports, and sees it online

    alerts = (await get_json(client, "/api/alerts?open=true"))["alerts"]
    [lost] = [a for a in alerts if a["kind"] == "region_lost"]
    assert lost["provider"] is None and lost["regions"] == ["us-east"]
    assert lost["severity"] == "critical" and "us-east stopped reporting" in lost["message"]
    # A provider's alerts are its own: the service's is in none of them.
    for name in ("Edge", "Plain"):
        mine = (await get_json(client, f"/api/alerts?provider={name}"))["alerts"]
        assert all(a["provider"] == name for a in mine), mine
    edges = (await get_json(client, "/api/alerts?provider=Edge"))["alerts"]
    assert {(a["kind"], tuple(a["regions"])) for a in edges} == {("degraded", ("us-east",))}
    critical = (await get_json(client, "/api/alerts?severity=critical"))["alerts"]
    assert [a["id"] for a in critical] == [lost["id"]]

    async with client.post(
        f"/api/alerts/{lost['id']}/acknowledge", json={"note": "the us-east host is rebooting"}
    ) as response:
        assert response.status == 200, await response.text()
        acknowledged = (await response.json())["alert"]
    assert acknowledged["acknowledged"] is True and acknowledged["provider"] is None
    assert acknowledged["note"] == "the us-east host is rebooting"
    async with client.post(f"/api/alerts/{lost['id']}/acknowledge") as response:
        assert response.status == 409
        assert "already acknowledged" in (await response.json())["detail"]
    # The instance comes back: the alert resolves.
    await append(
        client, RegionJoined(region="us-east", instance="host-b:7860", joined_at=began + 60)
    )
    [after] = [
        a for a in (await get_json(client, "/api/alerts"))["alerts"] if a["id"] == lost["id"]
    ]
    assert after["resolved_at"] is not None and after["acknowledged"] is True
