"""Chains and quotes through REST, /metrics and the live feed, on the real app.

The app is `create_app` over a config in tmp_path whose providers are three Ethereum
nodes and four quote sources (nothing probes: `probing=False`). The probes are appended
to the app's own event store as the monitor would record them, at chosen times, so every
figure the projections derive is known: the nodes' heads, lags and states, the pair's
median and each source's deviation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from feed import collect_until, receive_json
from pytest_aiohttp import AiohttpClient
from standins import closed_port

from cryptomon.config import load_config
from cryptomon.events.types import ObservedValue, ProbeRecorded
from cryptomon.http.errors import PROBLEM_TYPE, Problem
from cryptomon.http.keys import HUB, READ_MODELS, STORE
from cryptomon.http.schemas import ChainList, ChainView, PairList, PairView, ProviderView
from cryptomon.http.settings import Settings
from cryptomon.service.app import ENDPOINTS, create_app

Client = TestClient[web.Request, web.Application]

# Within one hour, so each node's lag history is a single hourly bucket.
T0 = float((int(time.time()) // 3600 - 3) * 3600 + 60)
TQ = T0 + 400  # the quotes' first round
NODES = ("Node A", "Node B", "Node C")
JUDGED_TYPES = {"chain_state_change", "quote_deviation", "head_update"}


def config_text() -> str:
    gone = f"http://127.0.0.1:{closed_port()}"
    nodes = "".join(
        f"""
[[providers]]
name = "{name}"
category = "rpc_nodes"
base_url = "{gone}"
interval = "1h"
rpc = {{ method = "eth_blockNumber" }}
observe = {{ head = "[BODY].result" }}
chain = "ethereum"
"""
        for name in NODES
    )
    sources = "".join(
        f"""
[[providers]]
name = "{name}"
category = "market_data"
base_url = "{gone}"
interval = "1h"
observe = {{ price = "[BODY].price", price_time = "[BODY].time" }}
quote = "{pair}"
"""
        for name, pair in (
            ("Quote A", "BTC-USD"),
            ("Quote B", "BTC-USD"),
            ("Quote C", "BTC-USD"),
            ("Quote E", "ETH-EUR"),
        )
    )
    return nodes + sources


def probe(provider: str, at: float, **observations: ObservedValue) -> ProbeRecorded:
    return ProbeRecorded(
        provider,
        "health",
        "/",
        "success",
        started_at=at,
        latency_ms=12.0,
        http_status=200,
        observations=observations,
    )


# Node A and B move one block a second; Node C answers another chain (56, BSC) and falls
# behind: stale once the best head has moved 360 blocks past it, lagging at its second
# probe more than 3 blocks behind, no longer stale once its head moves. At C's last probe
# the best head is A's and B's 460 as they were observed 12 s before (a head observed
# earlier counts as it is).
CHAIN_PROBES = (
    probe("Node A", T0, head="0x64"),  # 100
    probe("Node B", T0, head=100),
    probe("Node C", T0, head=100, chain_id="0x38"),
    probe("Node A", T0 + 360, head=460),
    probe("Node B", T0 + 360, head=460),
    probe("Node C", T0 + 360, head=100, chain_id="0x38"),
    probe("Node C", T0 + 372, head=101, chain_id="0x38"),
)
# Quote C is about 9.5% off the median for two probes: deviating. Quote A's data is two
# minutes old at each probe (60 s is stale). Quote E is the only source of ETH-EUR.
QUOTE_PROBES = (
    *(
        step
        for at in (TQ, TQ + 30)
        for step in (
            probe("Quote A", at, price=100, price_time=at - 120),
            probe("Quote B", at, price="100.5"),
            probe("Quote C", at, price=110.0),
        )
    ),
    probe("Quote E", TQ, price=3000),
)


@dataclass
class Service:
    client: Client

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    async def append(self, probes: tuple[ProbeRecorded, ...]) -> None:
        store = self.app[STORE]
        for event in probes:
            await store.append(f"provider:{event.provider}", [event])
        async with asyncio.timeout(5):
            await self.app[READ_MODELS].wait_for(store.head)

    async def get(self, path: str, status: int = 200) -> bytes:
        async with self.client.get(path) as response:
            body = await response.read()
            assert response.status == status, (path, response.status, body[:500])
            return body


@pytest.fixture
async def service(tmp_path: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[Service]:
    path = tmp_path / "chains.toml"
    path.write_text(config_text())
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "chains.db", environ={}, probing=False
    )
    yield Service(await aiohttp_client(create_app(settings)))


async def judged(service: Service) -> Service:
    await service.append(CHAIN_PROBES)
    await service.append(QUOTE_PROBES)
    return service


# ---- REST ------------------------------------------------------------------------


async def test_chains_list_and_one_chain_say_each_nodes_head_lag_and_states(
    service: Service,
) -> None:
    await judged(service)
    # The live feed turned the judgements into frames and the read models follow on.
    assert service.app[READ_MODELS].following
    listed = msgspec.json.decode(await service.get("/api/chains"), type=ChainList)
    assert listed.count == 1
    [summary] = listed.chains
    assert (summary.name, summary.best_head, summary.node_count) == ("ethereum", 460, 3)
    assert summary.best_at is not None and summary.best_at.endswith("Z")
    assert summary.block_rate == 1.0
    assert [(n.provider, n.head, n.lag, n.states) for n in summary.nodes] == [
        ("Node A", 460, 0, []),
        ("Node B", 460, 0, []),
        ("Node C", 101, 359, ["wrong_chain", "lagging"]),
    ]

    chain = msgspec.json.decode(await service.get("/api/chains/ethereum"), type=ChainView)
    assert (chain.best_head, chain.rules.chain_id, chain.rules.lag_blocks) == (460, 1, 3)
    nodes = {node.provider: node for node in chain.nodes}
    a, c = nodes["Node A"], nodes["Node C"]
    # From the probe its head last moved at to the chain's latest judged probe (C's).
    assert (a.seconds_since_head_moved, c.seconds_since_head_moved) == (12.0, 0.0)
    assert (c.head, c.lag, c.lag_seconds, c.chain_id) == (101, 359, 359.0, 56)
    assert c.states == ["wrong_chain", "lagging"] and c.succeeded
    assert [(h.probes, h.mean_lag, h.max_lag) for h in c.history] == [(3, 239.67, 360)]
    assert c.history[0].hour.endswith(":00:00Z")
    assert [(h.probes, h.max_lag) for h in a.history] == [(2, 0)]

    node_c = msgspec.json.decode(await service.get("/api/providers/Node C"), type=ProviderView)
    assert set(node_c.judgements) == {"wrong_chain", "lagging"}
    assert "chain id 56" in node_c.judgements["wrong_chain"]
    assert node_c.status == "degraded"
    providers = json.loads(await service.get("/api/providers"))
    judgements = {p["name"]: p["judgements"] for p in providers["providers"]}
    assert judgements["Node A"] == {} and set(judgements["Quote C"]) == {"deviation"}


async def test_quotes_say_the_median_or_why_there_is_none_and_each_sources_deviation(
    service: Service,
) -> None:
    await judged(service)
    listed = msgspec.json.decode(await service.get("/api/quotes"), type=PairList)
    assert [pair.name for pair in listed.pairs] == ["BTC-USD", "ETH-EUR"]

    btc = msgspec.json.decode(await service.get("/api/quotes/BTC-USD"), type=PairView)
    assert (btc.median, btc.median_note, btc.source_count) == (100.5, None, 3)
    sources = {source.provider: source for source in btc.sources}
    a, b, c = sources["Quote A"], sources["Quote B"], sources["Quote C"]
    assert (a.price, a.data_age_seconds, a.states) == (100.0, 120.0, ["quote_stale"])
    assert (b.price, b.data_age_seconds, b.data_time, b.states) == (100.5, None, None, [])
    assert c.deviation_percent == round((110 - 100.5) / 100.5 * 100, 4)
    assert c.states == ["deviation"]
    assert a.deviation_percent is not None and a.deviation_percent < 0

    eth = msgspec.json.decode(await service.get("/api/quotes/ETH-EUR"), type=PairView)
    assert eth.median is None
    assert eth.median_note is not None and "1 of 1 sources" in eth.median_note
    assert "needs 3" in eth.median_note
    assert eth.sources[0].deviation_percent is None


async def test_an_unknown_chain_or_pair_is_a_404_problem(service: Service) -> None:
    for path, slug in (
        ("/api/chains/dogechain", "unknown-chain"),
        ("/api/quotes/BTC-EUR", "unknown-pair"),
    ):
        async with service.client.get(path) as response:
            assert response.status == 404
            assert response.content_type == PROBLEM_TYPE
            problem = msgspec.json.decode(await response.read(), type=Problem)
        assert problem.type == f"/problems/{slug}" and problem.instance == path
    # Known before any probe: the nodes are registered, the pair has no median yet.
    chain = msgspec.json.decode(await service.get("/api/chains/ethereum"), type=ChainView)
    assert chain.best_head is None and len(chain.nodes) == 3
    eth = msgspec.json.decode(await service.get("/api/quotes/ETH-EUR"), type=PairView)
    assert eth.median_note is not None and "no source has quoted" in eth.median_note


async def test_the_openapi_document_describes_the_chains_and_quotes_routes(
    service: Service,
) -> None:
    document = json.loads(await service.get("/openapi.json"))
    paths = document["paths"]
    for path, schema in (
        ("/api/chains", "ChainList"),
        ("/api/chains/{chain}", "ChainView"),
        ("/api/quotes", "PairList"),
        ("/api/quotes/{pair}", "PairView"),
    ):
        operation = paths[path]["get"]
        content = operation["responses"]["200"]["content"]["application/json"]
        assert content["schema"]["$ref"] == f"#/components/schemas/{schema}"
        if "{" in path:
            assert "404" in operation["responses"]
            assert [p["in"] for p in operation["parameters"]] == ["path"]
    assert {e.path for e in ENDPOINTS} >= {"/api/chains/{chain}", "/api/quotes/{pair}"}
    provider = document["components"]["schemas"]["ProviderView"]["properties"]
    assert "judgements" in provider
    node = document["components"]["schemas"]["ChainNodeView"]
    assert "wall clock" in node["description"]


# ---- /metrics --------------------------------------------------------------------


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def test_metrics_has_heads_lags_prices_and_deviation_ratios(service: Service) -> None:
    await judged(service)
    text = (await service.get("/metrics")).decode()
    for family in (
        "cryptomon_chain_head_block",
        "cryptomon_chain_best_head_block",
        "cryptomon_chain_lag_blocks",
        "cryptomon_chain_lag_seconds",
        "cryptomon_quote_price",
        "cryptomon_quote_deviation_ratio",
    ):
        assert f"# TYPE {family} gauge\n" in text
        assert f"# HELP {family} " in text
    got = samples(text)
    assert got['cryptomon_chain_best_head_block{chain="ethereum"}'] == 460
    assert got['cryptomon_chain_head_block{chain="ethereum",provider="Node A"}'] == 460
    assert got['cryptomon_chain_head_block{chain="ethereum",provider="Node C"}'] == 101
    assert got['cryptomon_chain_lag_blocks{chain="ethereum",provider="Node C"}'] == 359
    assert got['cryptomon_chain_lag_seconds{chain="ethereum",provider="Node C"}'] == 359.0
    assert got['cryptomon_quote_price{pair="BTC-USD",provider="Quote B"}'] == 100.5
    ratio = got['cryptomon_quote_deviation_ratio{pair="BTC-USD",provider="Quote C"}']
    assert ratio == pytest.approx((110 - 100.5) / 100.5)
    # No median for ETH-EUR: its source has a price and no deviation line.
    assert 'cryptomon_quote_price{pair="ETH-EUR",provider="Quote E"}' in got
    assert not any('pair="ETH-EUR"' in name for name in got if "deviation" in name)


# ---- the live feed ---------------------------------------------------------------


def reached(position: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda seen: any(m["type"] == "event" and m["position"] == position for m in seen)


def provider_of(message: dict[str, Any]) -> str | None:
    for holder in (message, *(message.get(key, {}) for key in ("data", "alert", "incident"))):
        if "provider" in holder:
            provider: str = holder["provider"]
            return provider
    return None


def until_ping(seen: list[dict[str, Any]]) -> bool:
    return any(m["type"] == "ping" for m in seen)


async def judged_then_a_ping(service: Service) -> None:
    """The probes, then a ping to every client: behind all that the probes published."""
    await judged(service)
    service.app[HUB].heartbeat()


async def test_subscribers_get_judgements_and_head_updates_and_default_clients_do_not(
    service: Service,
) -> None:
    store = service.app[STORE]
    async with (
        service.client.ws_connect("/ws/live") as subscriber,
        service.client.ws_connect("/ws/live") as bystander,
    ):
        hello = await receive_json(subscriber, 5)
        assert hello["opt_in_topics"] == ["events", "chains", "quotes", "heads"]
        assert not {"events", "chains", "quotes", "heads"} & set(hello["topics"])
        await receive_json(bystander, 5)
        await subscriber.send_json({"type": "subscribe", "topics": ["chains", "quotes", "heads"]})
        replies = await collect_until(
            subscriber, lambda s: any(m["type"] == "subscribed" for m in s)
        )
        # The first subscribe replaces the default set.
        assert replies[-1]["topics"] == ["chains", "heads", "quotes"]

        first = store.head + 1
        await judged_then_a_ping(service)
        got = await collect_until(subscriber, until_ping)
        ignored = await collect_until(bystander, until_ping)

    chain_changes = [m for m in got if m["type"] == "chain_state_change"]
    assert [(m["provider"], m["state"], m["active"]) for m in chain_changes] == [
        ("Node C", "wrong_chain", True),
        ("Node C", "stale", True),
        ("Node C", "lagging", True),
        ("Node C", "stale", False),
    ]
    lagging = chain_changes[2]
    assert (lagging["chain"], lagging["head"], lagging["best_head"]) == ("ethereum", 101, 460)
    assert (lagging["lag"], lagging["lag_seconds"]) == (359, 359.0)
    assert lagging["position"] == store.head - len(QUOTE_PROBES)
    assert lagging["timestamp"].endswith("Z") and "359 blocks behind" in lagging["details"]

    quote_changes = [m for m in got if m["type"] == "quote_deviation"]
    assert [(m["provider"], m["state"], m["active"]) for m in quote_changes] == [
        ("Quote A", "quote_stale", True),
        ("Quote C", "deviation", True),
    ]
    deviating = quote_changes[1]
    assert (deviating["pair"], deviating["price"], deviating["median"]) == (
        "BTC-USD",
        110.0,
        100.5,
    )
    assert deviating["deviation_percent"] == pytest.approx((110 - 100.5) / 100.5 * 100)

    heads = [
        (m["provider"], m["previous_head"], m["head"]) for m in got if m["type"] == "head_update"
    ]
    assert heads == [
        ("Node A", None, 100),
        ("Node B", None, 100),
        ("Node C", None, 100),
        ("Node A", 100, 460),
        ("Node B", 100, 460),
        ("Node C", 100, 101),  # not at its probe at T0 + 360: the head did not move
    ]
    last_head = next(m for m in reversed(got) if m["type"] == "head_update")
    assert (last_head["chain"], last_head["best_head"], last_head["lag"]) == ("ethereum", 460, 359)
    assert last_head["position"] == first + len(CHAIN_PROBES) - 1

    assert {m["type"] for m in got} == JUDGED_TYPES | {"ping"}
    # The client that did not subscribe got each probe's log entry, without any of it.
    entries = [m for m in ignored if m["type"] == "new_log_entry"]
    assert len(entries) == len(CHAIN_PROBES) + len(QUOTE_PROBES)
    assert not (JUDGED_TYPES | {"event"}) & {m["type"] for m in ignored}


async def test_head_updates_stay_out_of_the_resume_ring(service: Service) -> None:
    store = service.app[STORE]
    hub = service.app[HUB]
    first = store.head + 1
    async with service.client.ws_connect("/ws/live") as ws:
        await receive_json(ws, 5)
        await ws.send_json({"type": "subscribe", "topics": ["chains", "heads", "events"]})
        await collect_until(ws, lambda s: any(m["type"] == "subscribed" for m in s))
        await judged(service)
        live = await collect_until(ws, reached(store.head))
        assert sum(m["type"] == "head_update" for m in live) == 6

        # The ring holds the events and judgements, never a head frame.
        assert not [frame for frame in hub.ring if frame.topic == "heads"]
        ring_topics = [frame.topic for frame in hub.ring if frame.position >= first]
        assert ring_topics.count("events") == len(CHAIN_PROBES) + len(QUOTE_PROBES)
        assert ring_topics.count("chains") == 4

        # A resume from the ring sends the judgements again, and no head_update.
        await ws.send_json({"type": "resume", "since": first - 1})
        again = await collect_until(ws, reached(store.head))
    assert not [m for m in again if m["type"] == "head_update"]
    assert sum(m["type"] == "chain_state_change" for m in again) == 4
    positions = [m["position"] for m in again if m["type"] == "event"]
    assert positions[-(store.head - first + 1) :] == list(range(first, store.head + 1))


async def test_each_opt_in_topic_alone_gets_its_messages_and_nothing_else(
    service: Service,
) -> None:
    kinds = {
        "events": "event",
        "chains": "chain_state_change",
        "quotes": "quote_deviation",
        "heads": "head_update",
    }
    async with contextlib.AsyncExitStack() as stack:
        sockets = {
            topic: await stack.enter_async_context(
                service.client.ws_connect(f"/ws/live?topics={topic}")
            )
            for topic in kinds
        }
        for topic, ws in sockets.items():
            assert (await receive_json(ws, 5))["topics"] == [topic]
        await judged_then_a_ping(service)
        got = {topic: await collect_until(ws, until_ping) for topic, ws in sockets.items()}
    for topic, kind in kinds.items():
        assert {m["type"] for m in got[topic]} == {kind, "ping"}, topic
    assert len(got["events"]) - 1 == len(CHAIN_PROBES) + len(QUOTE_PROBES)
    assert len(got["heads"]) - 1 == 6 and len(got["chains"]) - 1 == 4


async def test_a_provider_topic_carries_a_nodes_heads_and_judgements_not_its_raw_events(
    service: Service,
) -> None:
    """provider:<name> has everything about the node, opt-in topics' messages too, but its
    raw events, which come with `events` (every provider's)."""
    node = quote("provider:Node C")
    async with (
        service.client.ws_connect(f"/ws/live?topics={node}") as about_c,
        service.client.ws_connect(f"/ws/live?topics={node},events") as with_events,
    ):
        await receive_json(about_c, 5)
        await receive_json(with_events, 5)
        await judged_then_a_ping(service)
        got = await collect_until(about_c, until_ping)
        more = await collect_until(with_events, until_ping)
    types = {m["type"] for m in got}
    assert {"head_update", "chain_state_change", "new_log_entry", "provider_status_change"} <= types
    assert "alert_raised" in types and "event" not in types
    assert {provider_of(m) for m in got if m["type"] != "ping"} == {"Node C"}
    events = [m for m in more if m["type"] == "event"]
    assert len(events) == len(CHAIN_PROBES) + len(QUOTE_PROBES)
    sources = {"Quote A", "Quote B", "Quote C", "Quote E"}
    assert {m["event"]["provider"] for m in events} == {*NODES, *sources}
    assert [m for m in more if m["type"] != "event"] == got
