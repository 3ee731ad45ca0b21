"""Checks that tell the truth, through the real service: providers that fail while answering
HTTP 200, JSON-RPC nodes, declared maintenance and observations, against stand-ins on
127.0.0.1 that answer as the real providers' docs say they do.

Every app here is `create_app(...)` over a config in tmp_path with `probing=False`: the tests
trigger the health checks over HTTP and read the verdicts back from the REST API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from standins import StandIn

from cryptomon.config import load_config
from cryptomon.events.types import ProbeRecorded
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

Client = TestClient[web.Request, web.Application]
SOLANA_KEY = "solana-secret-0123456789"


def providers(standin: StandIn) -> str:
    base = standin.url("")
    return f"""
[[providers]]
name = "Kraken"
category = "exchanges"
base_url = "{base}/kraken"
health_path = "/SystemStatus"
interval = "30s"
maintenance_when = ["[BODY].result.status == any(maintenance, cancel_only, post_only)"]
conditions = ["[BODY].result.status == online"]

[[providers]]
name = "Bitfinex"
category = "exchanges"
base_url = "{base}/bitfinex"
health_path = "/platform/status"
interval = "30s"
maintenance_when = ["[BODY][0] == 0"]

[[providers]]
name = "Solana"
category = "rpc_nodes"
base_url = "{base}/solana"
health_path = "/health"
interval = "30s"
conditions = ["[BODY] == ok"]

[[providers]]
name = "Solana RPC"
category = "rpc_nodes"
base_url = "{base}/solana"
interval = "30s"
headers = {{ X-Node-Key = "env:SOLANA_KEY" }}
rpc = {{ method = "getHealth" }}

[[providers]]
name = "Etherscan V1"
category = "blockchain_explorers"
base_url = "{base}/etherscan/api"
health_path = "?module=stats&action=ethsupply"
interval = "30s"
conditions = ["[BODY].status == 1"]

[[providers]]
name = "Broken node"
category = "rpc_nodes"
base_url = "{base}/rpc/error"
interval = "30s"
rpc = {{ method = "eth_blockNumber" }}

[[providers]]
name = "Ethereum node"
category = "rpc_nodes"
base_url = "{base}/rpc/node"
interval = "30s"
rpc = [{{ method = "eth_blockNumber" }}, {{ method = "eth_chainId" }}]
conditions = ["[BODY][1].result == 0x1", "[STATUS] == 200"]
observe = {{ head = "[BODY][0].result" }}

[[providers]]
name = "Wrong chain"
category = "rpc_nodes"
base_url = "{base}/rpc/node"
interval = "30s"
rpc = [{{ method = "eth_blockNumber" }}, {{ method = "eth_chainId" }}]
conditions = ["[BODY][1].result == 0x38"]

[[providers]]
name = "Slow node"
category = "rpc_nodes"
base_url = "{base}/rpc/slow"
health_path = "?ms=300"
interval = "30s"
timeout = "5s"
degraded_latency = "100ms"
rpc = {{ method = "eth_blockNumber" }}
observe = {{ head = "[BODY].result" }}
"""


class Service:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def check(self) -> None:
        """Run the health checks once and wait until the read models show them."""
        async with self.client.post("/api/scheduler/trigger/health_checks") as response:
            assert response.status == 200, await response.text()
        app = self.client.app
        async with asyncio.timeout(10):
            await app[READ_MODELS].wait_for(app[STORE].head)

    async def get(self, path: str) -> Any:
        async with self.client.get(path) as response:
            assert response.status == 200, (path, await response.text())
            return await response.json()

    async def provider(self, name: str) -> Any:
        return await self.get(f"/api/providers/{name}")


@pytest.fixture
async def service(
    tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> AsyncIterator[Service]:
    config = tmp_path / "cryptomon.toml"
    config.write_text(providers(standin))
    settings = Settings.from_config(
        load_config(config),
        database=tmp_path / "checks.db",
        environ={"SOLANA_KEY": SOLANA_KEY},
        probing=False,
    )
    yield Service(await aiohttp_client(create_app(settings)))


async def test_each_provider_is_judged_by_what_its_answer_says(
    service: Service, standin: StandIn
) -> None:
    for _ in range(3):  # three failures in a row make a provider offline
        await service.check()

    kraken = await service.provider("Kraken")
    assert kraken["status"] == "maintenance"
    assert kraken["last_probe"]["outcome"] == "maintenance"
    assert kraken["last_probe"]["condition"] == {
        "condition": "[BODY].result.status == any(maintenance, cancel_only, post_only)",
        "seen": "maintenance",
    }
    bitfinex = await service.provider("Bitfinex")
    assert (bitfinex["status"], bitfinex["last_probe"]["outcome"]) == ("maintenance", "maintenance")

    solana = await service.provider("Solana")
    assert solana["status"] == "offline"
    assert solana["last_probe"]["http_status"] == 200
    assert solana["last_probe"]["error_type"] == "condition"
    assert solana["last_probe"]["condition"] == {"condition": "[BODY] == ok", "seen": "behind"}

    rpc = await service.provider("Solana RPC")
    assert rpc["status"] == "offline"
    assert rpc["last_probe"]["error_type"] == "rpc_error"
    assert rpc["last_probe"]["rpc_error_code"] == -32005
    assert "Node is behind by 42 slots" in rpc["last_probe"]["error_message"]
    [getHealth, *_] = standin.rpc_bodies
    assert getHealth == {"jsonrpc": "2.0", "id": 1, "method": "getHealth", "params": []}

    etherscan = await service.provider("Etherscan V1")
    assert etherscan["status"] == "offline"
    assert etherscan["last_probe"]["condition"] == {
        "condition": "[BODY].status == 1",
        "seen": "0",
    }

    broken = await service.provider("Broken node")
    assert (broken["status"], broken["last_probe"]["rpc_error_code"]) == ("offline", -32000)

    wrong = await service.provider("Wrong chain")
    assert wrong["status"] == "offline"
    assert wrong["last_probe"]["condition"]["seen"] == "0x1"

    slow = await service.provider("Slow node")
    assert slow["status"] == "degraded"
    assert slow["last_probe"]["outcome"] == "success"


async def test_a_healthy_node_is_online_and_its_head_is_observed_as_it_moves(
    service: Service, standin: StandIn
) -> None:
    await service.check()
    first = (await service.provider("Ethereum node"))["observations"]["head"]
    await service.check()
    node = await service.provider("Ethereum node")
    assert node["status"] == "online"
    assert node["last_probe"]["outcome"] == "success"
    head = node["observations"]["head"]
    # The batch was answered in reverse order: [BODY][0] is still eth_blockNumber's answer.
    assert isinstance(head["value"], int)
    assert head["value"] > first["value"] >= 0x1000
    assert head["endpoint"] == ""
    assert head["at"] >= first["at"]
    assert (await service.provider("Slow node"))["observations"]["head"]["value"] > 0x1000


async def test_declared_maintenance_raises_no_alert_and_feeds_no_failure_window(
    service: Service, standin: StandIn
) -> None:
    for _ in range(3):
        await service.check()
    alerts = await service.get("/api/alerts")
    alerted = {alert["provider"] for alert in alerts["alerts"]}
    assert {"Solana", "Solana RPC", "Etherscan V1"} <= alerted
    assert not {"Kraken", "Bitfinex"} & alerted
    status = await service.get("/api/status")
    assert status["maintenance"] == 2

    # The maintenance ends: Kraken is judged on its answers again, online.
    standin.kraken_status = "online"
    for _ in range(2):
        await service.check()
    kraken = await service.provider("Kraken")
    assert (kraken["status"], kraken["last_probe"]["outcome"]) == ("online", "success")
    metrics = await service.get("/api/providers/Kraken/stats?hours=1")
    # Only the two probes after the maintenance count, both successes.
    stats = metrics["connection_stats"]
    assert (stats["total_attempts"], stats["successful"]) == (2, 2)


async def test_no_secret_from_an_env_header_reaches_the_log_or_the_api(
    service: Service, standin: StandIn
) -> None:
    await service.check()
    assert standin.last_headers["X-Node-Key"] == SOLANA_KEY  # the key did go out
    for path in ("/api/providers", "/api/logs/failure?hours=1", "/api/events?limit=1000"):
        async with service.client.get(path) as response:
            assert SOLANA_KEY not in await response.text()
    events = await service.client.app[STORE].read_all(limit=10_000)
    probes = [event.event for event in events if isinstance(event.event, ProbeRecorded)]
    assert probes
    assert all(SOLANA_KEY not in json.dumps(str(event)) for event in events)
