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
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from feed import collect_until, receive_json
from standins import closed_port

from cryptomon.config import load_config
from cryptomon.events.types import (
    Event,
    ProbeKind,
    ProbeOutcome,
    ProbeRecorded,
    RateLimitChanged,
    RegionJoined,
    RegionLost,
)
from cryptomon.http.errors import PROBLEM_TYPE
from cryptomon.http.keys import READ_MODELS, RESPONSE_CACHE, STORE
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
    """Record the events as the instances would, wait until the read models have them, and
    drop the answers cached before (as a write through the API does)."""
    app = client.app
    assert app is not None
    store = app[STORE]
    for event in events:
        await store.append(stream_of(event), [event])
    async with asyncio.timeout(10):
        await app[READ_MODELS].wait_for(store.head)
    app[RESPONSE_CACHE].clear()


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


# ---- /metrics: the region label ----------------------------------------------------


async def scrape(client: Client) -> str:
    async with client.get("/metrics") as response:
        assert response.status == 200
        text: str = await response.text()
    return text


def sample_lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


async def test_metrics_without_regions_have_no_region_anywhere(client: Client) -> None:
    """A single instance without a region: no region label, no regional family, not even
    their HELP lines: the output is what it was before regions."""
    now = time.time() - 60
    await append(client, probe("Plain", now), probe("Plain", now + 1, "timeout"))
    text = await scrape(client)
    assert "region" not in text
    assert sample_lines(text, 'cryptomon_probes_total{provider="Plain",kind="health"') == [
        'cryptomon_probes_total{provider="Plain",kind="health",outcome="success"} 1',
        'cryptomon_probes_total{provider="Plain",kind="health",outcome="failed"} 0',
        'cryptomon_probes_total{provider="Plain",kind="health",outcome="timeout"} 1',
        'cryptomon_probes_total{provider="Plain",kind="health",outcome="rate_limited"} 0',
    ]
    assert 'cryptomon_probe_duration_seconds_count{provider="Plain"} 1\n' in text
    assert 'cryptomon_probe_duration_seconds_bucket{provider="Plain",le="+Inf"} 1\n' in text


async def test_metrics_split_probes_by_region_and_judge_each_region(
    client: Client, tmp_path: Path
) -> None:
    began = await regional_outage(client)
    await append(
        client,
        RateLimitChanged("Edge", 30, 50, 60.0, 60.0, began + 6, region="eu-west"),
        RateLimitChanged("Edge", 10, 50, 60.0, 20.0, began + 7, region="us-east"),
    )
    text = await scrape(client)
    # Every probe of Edge carried a region: its counters are all labelled with one.
    assert sample_lines(text, 'cryptomon_probes_total{provider="Edge",kind=') == []
    assert (
        'cryptomon_probes_total{provider="Edge",region="eu-west",kind="health",outcome="success"} 1'
        in text
    )
    assert (
        'cryptomon_probes_total{provider="Edge",region="us-east",kind="health",outcome="timeout"} 3'
        in text
    )
    assert 'cryptomon_probe_duration_seconds_count{provider="Edge",region="eu-west"} 1\n' in text
    assert 'cryptomon_probe_duration_seconds_count{provider="Edge",region="us-east"} 0\n' in text
    assert (
        'cryptomon_probe_duration_seconds_bucket{provider="Edge",region="eu-west",le="0.15"} 1\n'
        in text
    )
    assert (
        'cryptomon_probe_duration_seconds_bucket{provider="Edge",region="eu-west",le="0.1"} 0\n'
        in text
    )
    # Plain's are as they always were.
    assert 'cryptomon_probes_total{provider="Plain",kind="health",outcome="success"} 1\n' in text
    # The overall status: one series per status, no region label; each region's its own.
    assert 'cryptomon_provider_status{provider="Edge",status="degraded"} 1\n' in text
    assert sample_lines(text, "cryptomon_provider_status{") == [
        line for line in sample_lines(text, "cryptomon_provider_status{") if "region" not in line
    ]
    for region, up in (("eu-west", 1), ("us-east", 0)):
        assert f'cryptomon_provider_region_up{{provider="Edge",region="{region}"}} {up}\n' in text
        assert f'cryptomon_region_reporting{{region="{region}"}} 1\n' in text
    us_east = 'cryptomon_provider_region_status{provider="Edge",region="us-east"'
    assert sample_lines(text, us_east) == [
        f'cryptomon_provider_region_status{{provider="Edge",region="us-east",status="{status}"}}'
        f" {1 if status == 'offline' else 0}"
        for status in (
            "online", "degraded", "offline", "rate_limited", "maintenance", "unconfigured",
            "unknown", "paused",
        )
    ]  # fmt: skip
    assert 'cryptomon_rate_limit_region_usage_ratio{provider="Edge",region="eu-west"} 0.6\n' in text
    assert 'cryptomon_rate_limit_region_usage_ratio{provider="Edge",region="us-east"} 0.2\n' in text
    assert 'cryptomon_rate_limit_usage_ratio{provider="Edge"} 0.4\n' in text
    assert "region" not in "".join(sample_lines(text, 'cryptomon_provider_up{provider="Plain"'))

    # A probe of Edge without a region (an instance before regions): the series without
    # one counts it, so the sum over regions stays the provider's whole.
    await append(client, probe("Edge", began + 8))
    text = await scrape(client)
    assert 'cryptomon_probes_total{provider="Edge",kind="health",outcome="success"} 1\n' in text
    assert 'cryptomon_probe_duration_seconds_count{provider="Edge"} 1\n' in text
    total = sum(
        float(line.rpartition(" ")[2])
        for line in sample_lines(text, 'cryptomon_probes_total{provider="Edge",')
        if 'kind="health"' in line
    )
    stats = await get_json(client, "/api/providers/Edge/stats")
    assert total == stats["connection_stats"]["total_attempts"] == 5

    # The region stops reporting: its gauge says so, its view of Edge is unknown.
    await append(client, RegionLost(region="us-east", instance="b", lost_at=began + 30))
    text = await scrape(client)
    assert 'cryptomon_region_reporting{region="us-east"} 0\n' in text
    assert 'cryptomon_region_reporting{region="eu-west"} 1\n' in text
    assert (
        'cryptomon_provider_region_status{provider="Edge",region="us-east",status="unknown"} 1\n'
        in text
    )
    check_with_promtool(text, tmp_path)


def check_with_promtool(text: str, tmp_path: Path) -> None:
    """promtool's lint finds nothing (skipped without promtool, as tests/test_prometheus.py
    says)."""
    found = shutil.which("promtool")
    if found is None:
        from ci import IN_CI

        if IN_CI:
            pytest.fail("promtool is not installed; CI must check the metrics")
        return
    done = subprocess.run(
        [found, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr), done.stdout + done.stderr


# ---- the live feed -----------------------------------------------------------------


def of_type(seen: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [message for message in seen if message["type"] == kind]


async def test_the_feed_carries_regions_and_the_region_alert(client: Client) -> None:
    async with (
        client.ws_connect("/ws/live") as everything,
        client.ws_connect("/ws/live?topics=provider:Edge") as edge_only,
    ):
        for ws in (everything, edge_only):
            assert (await receive_json(ws, 5))["type"] == "connection_established"
        began = await regional_outage(client)
        await append(client, RegionLost(region="us-east", instance="b", lost_at=began + 30))
        seen = await collect_until(
            everything,
            lambda s: (
                any(m["type"] == "alert_raised" and m["alert"]["kind"] == "region_lost" for m in s)
                and any(
                    m["type"] == "status_update" and m.get("regions", {}).get("us-east") == "lost"
                    for m in s
                )
            ),
        )
        edge = [m for m in of_type(seen, "provider_status_change") if m["provider"] == "Edge"]
        # eu-west first sees Edge online; us-east then sees it offline (too few probes to
        # judge before its third failure): degraded, naming us-east; us-east lost, eu-west
        # alone judges it: online again.
        assert [m["new_status"] for m in edge] == ["online", "degraded", "online"]
        first, degraded, last = edge
        assert first["regions"] == ["eu-west"]
        assert first["region_statuses"] == {"eu-west": "online"}
        assert degraded["regions"] == ["us-east"]
        assert degraded["region_statuses"] == {"eu-west": "online", "us-east": "offline"}
        assert degraded["details"].startswith("regional: ")
        assert last["regions"] == ["eu-west"]
        assert last["region_statuses"] == {"eu-west": "online", "us-east": "unknown"}
        # A provider probed without a region: the message has neither field.
        [plain] = [m for m in of_type(seen, "provider_status_change") if m["provider"] == "Plain"]
        assert "regions" not in plain and "region_statuses" not in plain
        [lost] = [
            m["alert"] for m in of_type(seen, "alert_raised") if m["alert"]["kind"] == "region_lost"
        ]
        assert lost["provider"] is None and lost["regions"] == ["us-east"]
        update = next(
            m for m in of_type(seen, "status_update") if m["regions"].get("us-east") == "lost"
        )
        assert update["regions"] == {"eu-west": "reporting", "us-east": "lost"}

        # The client of Edge's topic got Edge's changes, and not the service's alert.
        narrow = await collect_until(
            edge_only,
            lambda s: any(
                m["type"] == "alert_resolved" and m["alert"]["kind"] == "degraded" for m in s
            ),
        )
        assert all(m.get("alert", {}).get("kind") != "region_lost" for m in narrow)
        assert {m["provider"] for m in of_type(narrow, "provider_status_change")} == {"Edge"}
        # The region comes back: the alert resolves on the alerts topic.
        await append(client, RegionJoined(region="us-east", instance="b", joined_at=began + 60))
        resolved = await collect_until(
            everything,
            lambda s: any(
                m["type"] == "alert_resolved" and m["alert"]["kind"] == "region_lost" for m in s
            ),
        )
        [back] = [m["alert"] for m in of_type(resolved, "alert_resolved")]
        assert back["provider"] is None and back["resolved_at"] is not None


async def test_status_updates_say_nothing_of_regions_without_them(client: Client) -> None:
    await append(client, probe("Plain", time.time() - 5))
    async with client.ws_connect("/ws/live?topics=status") as ws:
        seen = await collect_until(ws, lambda s: bool(of_type(s, "status_update")))
    [update] = of_type(seen, "status_update")
    assert "regions" not in update


# ---- the OpenAPI document ----------------------------------------------------------


async def test_openapi_documents_the_regions_the_region_parameter_and_the_service_alert(
    client: Client,
) -> None:
    document = await get_json(client, "/openapi.json")
    schemas = document["components"]["schemas"]
    stats = document["paths"]["/api/providers/{name}/stats"]["get"]
    [region] = [p for p in stats["parameters"] if p["name"] == "region"]
    assert region["in"] == "query" and region["required"] is False
    assert region["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 32,
        "pattern": "^(?:[a-z0-9][a-z0-9-]{0,31})$",
    }
    assert {"400", "404"} <= set(stats["responses"])
    assert "region" in schemas["ProviderStats"]["properties"]
    view = schemas["ProviderView"]["properties"]
    assert view["regions"]["additionalProperties"] == {
        "$ref": "#/components/schemas/ProviderRegion"
    }
    assert view["status_regions"]["type"] == "array"
    assert set(schemas["ProviderRegion"]["required"]) == {
        "status", "details", "last_probe_at", "last_status_change", "consecutive_failures", "lost"
    }  # fmt: skip
    provider = schemas["AlertView"]["properties"]["provider"]
    assert {"type": "null"} in provider["anyOf"]
    assert "region_lost" in schemas["AlertView"]["properties"]["kind"]["enum"]
