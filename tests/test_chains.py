"""Chains and quotes: nodes judged against their chain's best head, prices against their
pair's median; as folds (with properties), and through the real service."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpClient

from cryptomon.config import load_config
from cryptomon.events.types import (
    EventMetadata,
    ObservedValue,
    ProbeOutcome,
    ProbeRecorded,
    ProviderRegistered,
    ProviderRemoved,
    RecordedEvent,
)
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.projections import (
    AlertRaised,
    AlertResolved,
    Notice,
    Projections,
    ProjectionSettings,
    ProviderStatusChanged,
)
from cryptomon.projections.chains import RATE_SPAN_SECONDS, best_head
from cryptomon.projections.notices import Judged
from cryptomon.projections.settings import ChainSettings
from cryptomon.service.app import create_app

T0 = 1_800_000_000.0
Event = ProviderRegistered | ProviderRemoved | ProbeRecorded


class Fold:
    """Events applied as the live service applies them, with gap-free positions."""

    def __init__(self, settings: ProjectionSettings | None = None) -> None:
        self.projections = Projections(settings)
        self.log: list[RecordedEvent] = []

    def __call__(self, *events: Event) -> list[Notice]:
        notices: list[Notice] = []
        for event in events:
            at = event.started_at if isinstance(event, ProbeRecorded) else T0
            recorded = RecordedEvent(
                position=len(self.log) + 1,
                event_id=f"e{len(self.log) + 1}",
                stream="test",
                version=len(self.log) + 1,
                recorded_at=at,
                event=event,
                metadata=EventMetadata(),
                hash="x",
            )
            self.log.append(recorded)
            notices += self.projections.apply(recorded)
        return notices

    def lag(self, provider: str) -> int | None:
        node = self.projections.chains.node(provider)
        assert node is not None
        return node.lag

    def states(self, provider: str) -> list[str]:
        node = self.projections.chains.node(provider)
        assert node is not None
        return list(node.states)

    def status(self, provider: str) -> str:
        state = self.projections.providers.get(provider)
        assert state is not None
        return state.status


def registered(provider: str, *, chain: str | None = None, quote: str | None = None) -> Event:
    return ProviderRegistered(
        provider=provider,
        category="rpc_nodes" if chain else "market_data",
        base_url=f"https://{provider.lower()}.example",
        health_path="",
        schedule="every 30s",
        timeout_ms=10_000,
        degraded_latency_ms=2_000,
        chain=chain,
        quote=quote,
    )


def probed(
    provider: str,
    at: float,
    outcome: ProbeOutcome = "success",
    **observations: ObservedValue,
) -> ProbeRecorded:
    success = outcome == "success"
    return ProbeRecorded(
        provider=provider,
        kind="health",
        endpoint="",
        outcome=outcome,
        started_at=at,
        latency_ms=50.0,
        http_status=200 if success else 503,
        error_kind=None if success else "http_5xx",
        error_message=None if success else "no",
        observations=observations if success and observations else None,
    )


def head(provider: str, at: float, block: int, chain_id: str | None = None) -> ProbeRecorded:
    if chain_id is None:
        return probed(provider, at, head=hex(block))
    return probed(provider, at, head=hex(block), chain_id=chain_id)


def chain_of(fold: Fold, *names: str, chain: str = "ethereum") -> None:
    fold(*(registered(name, chain=chain) for name in names))


def raised(notices: Iterable[Notice]) -> list[tuple[str, str, str]]:
    return [
        (n.alert.provider, n.alert.kind, n.alert.severity)
        for n in notices
        if isinstance(n, AlertRaised)
    ]


def resolved(notices: Iterable[Notice]) -> list[tuple[str, str]]:
    return [(n.alert.provider, n.alert.kind) for n in notices if isinstance(n, AlertResolved)]


# ---- chains as a fold ---------------------------------------------------------------


def test_a_node_behind_for_two_probes_is_lagging_degraded_and_alerted_then_recovers() -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "C")
    fold(head("A", T0, 100), head("B", T0 + 1, 100), head("C", T0 + 2, 100))
    # A moves, so it is not stale; but it is 19 blocks behind, once: not lagging yet.
    first = fold(head("B", T0 + 30, 120), head("C", T0 + 31, 120), head("A", T0 + 32, 101))
    assert fold.lag("A") == 19 and fold.states("A") == []
    assert raised(first) == []
    second = fold(head("B", T0 + 60, 121), head("C", T0 + 61, 121), head("A", T0 + 62, 102))
    assert fold.states("A") == ["lagging"]
    assert raised(second) == [("A", "lagging", "warning")]
    [change] = [n for n in second if isinstance(n, ProviderStatusChanged)]
    assert (change.old_status, change.new_status, change.judged) == ("online", "degraded", True)
    assert change.details == (
        "lagging: 19 blocks behind the best head 121 for 2 probes (more than 3 is lagging)"
    )
    provider = fold.projections.providers.get("A")
    assert provider is not None and list(provider.judged) == ["lagging"]
    # Caught up: the alert resolves by itself, the provider is online again.
    back = fold(head("A", T0 + 90, 121))
    assert resolved(back) == [("A", "lagging")]
    assert fold.status("A") == "online" and fold.states("A") == []
    assert all(n.alert.kind != "degraded" for n in (*first, *second, *back) if hasattr(n, "alert"))


def test_a_runaway_node_does_not_make_the_others_behind() -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "Runaway")
    for i in range(4):
        at = T0 + 30 * i
        fold(
            head("Runaway", at, 10_000 + i), head("A", at + 1, 100 + i), head("B", at + 2, 100 + i)
        )
    assert fold.lag("A") == fold.lag("B") == 0
    assert fold.states("A") == fold.states("B") == []
    assert fold.lag("Runaway") == 0  # ahead is not behind


def test_a_frozen_node_goes_stale_against_the_group_and_recovers_when_it_moves() -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "Frozen")
    fold(head("A", T0, 100), head("B", T0, 100), head("Frozen", T0, 100))
    notices = fold(head("A", T0 + 12, 102), head("B", T0 + 12, 102), head("Frozen", T0 + 13, 100))
    assert fold.states("Frozen") == []  # the best moved 2: within stale_blocks (3)
    notices = fold(head("A", T0 + 24, 104), head("B", T0 + 24, 104), head("Frozen", T0 + 25, 100))
    assert "stale" in fold.states("Frozen")
    assert ("Frozen", "stale", "warning") in raised(notices)
    notices = fold(head("Frozen", T0 + 26, 104))
    assert ("Frozen", "stale") in resolved(notices)


def test_a_long_gap_between_blocks_makes_no_node_stale() -> None:
    """Judged against the group: a Bitcoin block that takes an hour freezes every node alike."""
    fold = Fold()
    chain_of(fold, "A", "B", "C", chain="bitcoin")
    for i in range(8):  # 8 probes over 70 min, no new block
        at = T0 + 600 * i
        fold(head("A", at, 900_000), head("B", at + 5, 900_000), head("C", at + 9, 900_000))
    assert [fold.states(n) for n in "ABC"] == [[], [], []]


def test_a_lone_node_goes_stale_after_the_configured_time() -> None:
    settings = ProjectionSettings(chains=(ChainSettings(name="solo", stale_after_seconds=60.0),))
    fold = Fold(settings)
    chain_of(fold, "Only", chain="solo")
    fold(head("Only", T0, 5), head("Only", T0 + 30, 5), head("Only", T0 + 60, 5))
    assert fold.states("Only") == []
    notices = fold(head("Only", T0 + 61, 5))
    assert fold.states("Only") == ["stale"]
    [judged] = [n for n in notices if isinstance(n, Judged)]
    assert judged.details == "head 5 has not moved for 61 s (more than 60 s is stale)"


def test_a_node_on_another_chain_is_wrong_chain_critical() -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "Bsc")
    fold(head("A", T0, 100, "0x1"), head("B", T0, 100, "0x1"))
    notices = fold(head("Bsc", T0 + 1, 100, "0x38"))
    assert fold.states("Bsc") == ["wrong_chain"]
    assert raised(notices) == [("Bsc", "wrong_chain", "critical")]
    [alert] = [n.alert for n in notices if isinstance(n, AlertRaised)]
    assert alert.message.startswith("Bsc is on the wrong chain (chain:ethereum): answers")
    [judged] = [n for n in notices if isinstance(n, Judged)]
    assert judged.details == "answers chain id 56 (0x38); ethereum is 1 (0x1)"
    assert resolved(fold(head("Bsc", T0 + 30, 101, "0x1"))) == [("Bsc", "wrong_chain")]


def test_a_failed_probe_takes_the_node_out_of_the_best_head() -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "C")
    fold(head("A", T0, 500), head("B", T0, 500), head("C", T0, 100))
    assert fold.lag("C") == 400
    fold(probed("A", T0 + 30, "failed"))  # A's 500 no longer counts
    fold(head("C", T0 + 31, 100))
    assert fold.lag("C") == 0  # B alone is ahead: two nodes must agree on a head


def test_nodes_on_another_chain_or_failing_their_probe_do_not_set_the_best_head() -> None:
    """Two nodes of another chain far ahead, answering while their probe fails a condition
    and then succeeding: their heads never make the right chain's nodes lag."""
    fold = Fold()
    chain_of(fold, "A", "B", "C", "D")
    for i in range(3):
        at = T0 + 30 * i
        failing = ProbeRecorded(
            provider="C", kind="health", endpoint="", outcome="failed", started_at=at,
            http_status=200, error_kind="condition", error_message="no",
            observations={"head": 40_000_000 + i, "chain_id": "0x38"},
        )  # fmt: skip
        fold(failing, head("D", at, 40_000_000 + i, "0x38"))
        fold(head("A", at + 1, 20_000_000 + i, "0x1"), head("B", at + 1, 20_000_000 + i, "0x1"))
    assert fold.lag("A") == fold.lag("B") == 0
    assert fold.states("A") == fold.states("B") == []
    assert fold.states("C") == fold.states("D") == ["wrong_chain"]
    chain = fold.projections.chains.get("ethereum")
    assert chain is not None and chain.best == 20_000_002


def test_a_removed_node_ends_its_states_and_alerts() -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "C")
    for i in range(3):
        at = T0 + 30 * i
        fold(head("A", at, 100 + i), head("B", at, 100 + i), head("C", at + 1, 50))
    assert "lagging" in fold.states("C")
    notices = fold(ProviderRemoved(provider="C"))
    assert ("C", "lagging") in resolved(notices)
    assert fold.projections.chains.node("C") is None


def test_heads_observed_after_a_probe_started_are_carried_back_at_the_block_rate() -> None:
    """Two nodes whose probes started 25 s later but were recorded first see a chain
    12 blocks further on (a block every 2 s): the nodes probed before them are not behind,
    once the log shows the chain's rate."""
    fold = Fold()
    chain_of(fold, "A", "B", "Late 1", "Late 2")
    rate = 0.5
    rounds = int(2 * RATE_SPAN_SECONDS // 30) + 2
    lags = []
    for i in range(rounds):
        at = T0 + 30 * i
        fold(head("Late 1", at + 25, math.floor(rate * (at + 25 - T0))))
        fold(head("Late 2", at + 25, math.floor(rate * (at + 25 - T0))))
        fold(head("A", at, math.floor(rate * (at - T0))))
        fold(head("B", at, math.floor(rate * (at - T0))))
        chain = fold.projections.chains.get("ethereum")
        assert chain is not None
        if chain.rate is not None:
            lags.append((fold.lag("A"), fold.lag("B")))
        assert fold.states("A") == fold.states("B") == []
    assert lags and all(a is not None and a <= 1 and b is not None and b <= 1 for a, b in lags)
    chain = fold.projections.chains.get("ethereum")
    assert chain is not None and chain.rate == pytest.approx(rate, rel=0.05)
    late = fold.projections.chains.node("Late 1")
    assert late is not None and late.lag == 0 and late.lag_seconds == 0


def test_lag_in_seconds_follows_the_block_rate() -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "Behind")
    rounds = int(RATE_SPAN_SECONDS // 30) + 2
    for i in range(rounds):
        at = T0 + 30 * i
        block = 10 * i  # a block every 3 s
        fold(head("A", at, block), head("B", at, block), head("Behind", at + 1, max(0, block - 6)))
    behind = fold.projections.chains.node("Behind")
    assert behind is not None and behind.lag == 6
    assert behind.lag_seconds == pytest.approx(18.0, rel=0.05)


def test_best_head_is_the_second_highest() -> None:
    assert best_head([7.0]) == 7
    assert best_head([10.0, 5.0]) == 5
    assert best_head([1000.0, 100.0, 100.0, 90.0]) == 100
    assert best_head([100.9, 100.2, 3.0]) == 100


# ---- chain properties ---------------------------------------------------------------

heads_st = st.integers(min_value=0, max_value=10_000)


@st.composite
def rounds(draw: st.DrawFn) -> list[list[tuple[str, int | None]]]:
    """Rounds of probes of nodes N0..Nk at one time each: a head, or None for a failure."""
    nodes = [f"N{i}" for i in range(draw(st.integers(1, 5)))]
    count = draw(st.integers(1, 8))
    return [
        [(node, draw(st.none() | heads_st)) for node in draw(st.permutations(nodes))]
        for _ in range(count)
    ]


def fold_rounds(fold: Fold, plan: list[list[tuple[str, int | None]]], interval: float) -> None:
    for index, probes in enumerate(plan):
        at = T0 + interval * index
        for node, block in probes:
            fold(probed(node, at, "failed") if block is None else head(node, at, block))


@given(plan=rounds())
@settings(max_examples=150, deadline=None)
def test_lag_is_never_negative(plan: list[list[tuple[str, int | None]]]) -> None:
    fold = Fold()
    chain_of(fold, *{node for probes in plan for node, _ in probes})
    fold_rounds(fold, plan, 30.0)
    for chain in fold.projections.chains.all():
        for node in chain.nodes.values():
            assert node.lag is None or node.lag >= 0
            assert all(bucket.lag_max >= 0 for bucket in node.history)


@given(plan=rounds())
@settings(max_examples=150, deadline=None)
def test_a_node_that_agrees_with_the_best_head_changes_no_other_lag(
    plan: list[list[tuple[str, int | None]]],
) -> None:
    """Before each node's probe, one more node reports the head that probe is measured
    against; every other node's lag is as without it. (Rounds 10 s apart: no block rate is
    measured, so no head is carried forward.)"""
    names = {node for probes in plan for node, _ in probes}
    alone, joined = Fold(), Fold()
    chain_of(alone, *names)
    chain_of(joined, *names, "Agrees")
    for index, probes in enumerate(plan):
        at = T0 + 10 * index
        for node, block in probes:
            if block is None:
                alone(probed(node, at, "failed"))
                joined(probed(node, at, "failed"))
                continue
            chain = alone.projections.chains.get("ethereum")
            assert chain is not None
            others = [
                float(n.head)
                for n in chain.nodes.values()
                if n.provider != node and n.succeeded and n.head is not None
            ]
            joined(head("Agrees", at, best_head([float(block), *others])))
            alone(head(node, at, block))
            joined(head(node, at, block))
            assert joined.lag(node) == alone.lag(node)


@given(
    honest=st.lists(st.integers(0, 50), min_size=2, max_size=10),
    runaway=st.lists(st.integers(0, 10**9), min_size=2, max_size=10),
    gap=st.floats(0.0, 20.0),
)
@settings(max_examples=150, deadline=None)
def test_a_single_runaway_node_never_makes_two_agreeing_nodes_lagging(
    honest: list[int], runaway: list[int], gap: float
) -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "Runaway")
    block = 1000
    for index, (step, wild) in enumerate(zip(honest, runaway, strict=False)):
        block += step
        at = T0 + 30 * index
        fold(head("Runaway", at, wild), head("A", at + gap, block), head("B", at + gap, block))
        assert fold.states("A") == [] and fold.states("B") == []


@given(
    rate=st.floats(0.05, 5.0),
    phases=st.lists(st.floats(0.0, 29.9), min_size=2, max_size=6),
    probes=st.integers(3, 40),
)
@settings(max_examples=150, deadline=None)
def test_nodes_probed_at_different_phases_of_a_steady_chain_are_not_lagging(
    rate: float, phases: list[float], probes: int
) -> None:
    fold = Fold()
    names = [f"N{i}" for i in range(len(phases))]
    chain_of(fold, *names)
    schedule = sorted(
        (T0 + 30 * i + phase, name)
        for i in range(probes)
        for name, phase in zip(names, phases, strict=True)
    )
    for at, name in schedule:
        fold(head(name, at, math.floor(rate * (at - T0)) + 1_000_000))
        assert fold.states(name) == [], (name, fold.lag(name))


@given(plan=rounds(), prices=st.lists(st.floats(90.0, 110.0), min_size=4, max_size=30))
@settings(max_examples=100, deadline=None)
def test_a_replay_folds_chains_and_quotes_to_the_state_the_live_fold_built(
    plan: list[list[tuple[str, int | None]]], prices: list[float]
) -> None:
    live = Fold()
    chain_of(live, *{node for probes in plan for node, _ in probes})
    live(*(registered(f"Q{i}", quote="BTC-USD") for i in range(4)))
    fold_rounds(live, plan, 30.0)
    for index, price in enumerate(prices):
        live(probed(f"Q{index % 4}", T0 + 10 * index, price=price, price_time=T0 + 9 * index))
    replay = Projections()
    for recorded in live.log:
        replay.fold(recorded)
    assert replay.state_equal(live.projections) == []
    paged = Projections()
    paged.fold_columns(
        [r.position for r in live.log],
        [r.recorded_at for r in live.log],
        [r.event for r in live.log],
    )
    assert paged.state_equal(live.projections) == []


# ---- quotes as a fold ---------------------------------------------------------------


def quoted(fold: Fold, *names: str, pair: str = "BTC-USD") -> None:
    fold(*(registered(name, quote=pair) for name in names))


def price(provider: str, at: float, value: float | str, **more: ObservedValue) -> ProbeRecorded:
    return probed(provider, at, price=value, **more)


def test_a_source_off_the_median_for_two_probes_raises_a_deviation_alert_that_resolves() -> None:
    fold = Fold()
    quoted(fold, "A", "B", "C", "Drifts")
    fold(price("A", T0, 50_000), price("B", T0, "50010.5"), price("C", T0, 49_990))
    assert raised(fold(price("Drifts", T0 + 1, 52_500))) == []  # once is not yet
    source = fold.projections.quotes.source("Drifts")
    assert source is not None and source.deviation == pytest.approx(4.99, abs=0.02)
    notices = fold(price("Drifts", T0 + 31, 52_500))
    assert raised(notices) == [("Drifts", "deviation", "warning")]
    assert fold.status("Drifts") == "degraded"
    pair = fold.projections.quotes.get("BTC-USD")
    assert pair is not None and pair.median == pytest.approx(50_005.25)
    back = fold(price("Drifts", T0 + 61, 50_100))
    assert resolved(back) == [("Drifts", "deviation")]
    assert fold.status("Drifts") == "online"


def test_a_pair_with_fewer_than_three_sources_has_no_median_and_no_deviation() -> None:
    fold = Fold()
    quoted(fold, "A", "B")
    for i in range(4):
        notices = fold(price("A", T0 + 30 * i, 50_000), price("B", T0 + 30 * i + 1, 60_000))
        assert raised(notices) == []
    pair = fold.projections.quotes.get("BTC-USD")
    assert pair is not None and pair.median is None


def test_data_older_than_max_staleness_raises_a_stale_quote_alert() -> None:
    fold = Fold()
    quoted(fold, "A", "B", "Old")
    notices = fold(price("Old", T0, 50_000, price_time=T0 - 61))
    assert raised(notices) == [("Old", "quote_stale", "warning")]
    [judged] = [n for n in notices if isinstance(n, Judged)]
    assert judged.details.endswith("61 s before the probe (more than 60 s is stale)")
    iso = "2027-01-15T08:00:29Z"  # ISO text; T0 + 30 is 08:00:30 UTC... within the limit
    at = 1_800_000_030.0
    assert resolved(fold(price("Old", at, 50_000, price_time=iso))) == [("Old", "quote_stale")]
    assert resolved(fold(price("Old", at + 1, 50_000, price_time=(at - 5) * 1000))) == []


def test_a_provider_joining_and_leaving_a_chain_or_pair_mid_page_is_judged_only_meanwhile() -> None:
    """The judges see a provider's probes only while it is their member: the route changes
    with its registration, within a replay's page too, and is rebuilt from a snapshot."""
    live = Fold()
    chain_of(live, "A", "B")
    live(registered("C"))
    for i in range(3):
        at = T0 + 30 * i
        live(head("A", at, 100 + i), head("B", at, 100 + i), head("C", at + 1, 50))
    assert live.projections.chains.node("C") is None
    live(registered("C", chain="ethereum"))
    for i in range(3, 6):
        at = T0 + 30 * i
        live(head("A", at, 100 + i), head("B", at, 100 + i), head("C", at + 1, 50))
    assert "lagging" in live.states("C")
    halfway = Projections.restore(live.projections.snapshot_state())
    # Out of the chain (its lagging ends), into a pair, removed, back in the chain.
    notices = live(registered("C", quote="BTC-USD"))
    assert ("C", "lagging") in resolved(notices)
    live(*(registered(f"Q{i}", quote="BTC-USD") for i in range(2)))
    for i in range(6, 9):
        at = T0 + 30 * i
        live(head("C", at, 50), price("Q0", at, 100.0), price("Q1", at, 100.0))
        live(price("C", at + 1, 110.0))
    source = live.projections.quotes.source("C")
    assert source is not None and "deviation" in source.states
    assert live.projections.chains.node("C") is None
    live(ProviderRemoved(provider="C"))
    live(price("C", T0 + 300, 100.0))
    assert live.projections.quotes.source("C") is None
    live(registered("C", chain="ethereum"))
    live(head("A", T0 + 330, 111), head("B", T0 + 330, 111), head("C", T0 + 331, 111))
    assert live.lag("C") == 0

    paged = Projections()
    paged.fold_columns(
        [r.position for r in live.log],
        [r.recorded_at for r in live.log],
        [r.event for r in live.log],
    )
    assert paged.state_equal(live.projections) == []
    rest = [r for r in live.log if r.position > halfway.position]
    for recorded in rest:
        halfway.fold(recorded)
    assert halfway.state_equal(live.projections) == []


# ---- through the real service -------------------------------------------------------


class Network:
    """Stand-in JSON-RPC nodes and price APIs on loopback whose answers a test sets."""

    def __init__(self) -> None:
        self.heads: dict[str, int] = {}
        self.chain_ids: dict[str, str] = {}
        self.prices: dict[str, float] = {}
        app = web.Application()
        app.router.add_post("/node/{name}", self._node)
        app.router.add_get("/price/{name}", self._price)
        self.server = TestServer(app, host="127.0.0.1")

    async def _node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        replies = []
        for call in await request.json():
            result = hex(self.heads[name]) if call["method"] == "eth_blockNumber" else None
            if call["method"] == "eth_chainId":
                result = self.chain_ids.get(name, "0x1")
            replies.append({"jsonrpc": "2.0", "id": call["id"], "result": result})
        return web.json_response(replies)

    async def _price(self, request: web.Request) -> web.Response:
        return web.json_response({"bitcoin": {"usd": self.prices[request.match_info["name"]]}})

    def config(self) -> str:
        base = f"http://127.0.0.1:{self.server.port}"
        nodes = "".join(
            f"""
[[providers]]
name = "{name}"
category = "rpc_nodes"
base_url = "{base}/node/{name}"
interval = "30s"
chain = "ethereum"
rpc = [{{ method = "eth_blockNumber" }}, {{ method = "eth_chainId" }}]
observe = {{ head = "[BODY][0].result", chain_id = "[BODY][1].result" }}
"""
            for name in self.heads
        )
        sources = "".join(
            f"""
[[providers]]
name = "{name}"
category = "market_data"
base_url = "{base}/price/{name}"
interval = "30s"
quote = "BTC-USD"
observe = {{ price = "[BODY].bitcoin.usd" }}
"""
            for name in self.prices
        )
        return nodes + sources


class Service:
    def __init__(self, client: Any) -> None:
        self.client = client

    async def probe(self) -> None:
        """Probe every provider once and wait until the read models show it."""
        async with self.client.post("/api/scheduler/trigger/health_checks") as response:
            assert response.status == 200, await response.text()
        app = self.client.app
        async with asyncio.timeout(10):
            await app[READ_MODELS].wait_for(app[STORE].head)

    async def alerts(self, kind: str) -> list[dict[str, Any]]:
        async with self.client.get("/api/alerts") as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        return [a for a in body["alerts"] if a["kind"] == kind]

    async def status(self, name: str) -> str:
        async with self.client.get(f"/api/providers/{name}") as response:
            assert response.status == 200
            return str((await response.json())["status"])


@pytest.fixture
async def network() -> AsyncIterator[Network]:
    network = Network()
    network.heads.update({f"Node {c}": 1000 for c in "ABCD"})
    network.prices.update({f"Price {c}": 50_000.0 for c in "ABCD"})
    await network.server.start_server()
    yield network
    await network.server.close()


@pytest.fixture
async def service(tmp_path: Path, network: Network, aiohttp_client: AiohttpClient) -> Service:
    config = tmp_path / "cryptomon.toml"
    config.write_text(network.config())
    settings = Settings.from_config(
        load_config(config), database=tmp_path / "chains.db", environ={}, probing=False
    )
    return Service(await aiohttp_client(create_app(settings)))


def advance(network: Network, blocks: int, *, except_: Iterable[str] = ()) -> None:
    for name in network.heads:
        if name not in except_:
            network.heads[name] += blocks


async def test_a_node_that_falls_20_blocks_behind_is_lagging_within_k_plus_one_probes(
    service: Service, network: Network
) -> None:
    await service.probe()
    network.heads["Node D"] -= 20
    probes = 0
    while not await service.alerts("lagging"):
        probes += 1
        assert probes <= 3, "not lagging within K + 1 = 3 probe intervals"
        advance(network, 1)
        await service.probe()
    [alert] = await service.alerts("lagging")
    assert alert["provider"] == "Node D" and alert["resolved_at"] is None
    assert await service.status("Node D") == "degraded"
    network.heads["Node D"] = network.heads["Node A"]
    await service.probe()
    [alert] = await service.alerts("lagging")
    assert alert["resolved_at"] is not None
    assert await service.status("Node D") == "online"


async def test_a_frozen_node_goes_stale(service: Service, network: Network) -> None:
    await service.probe()
    for _ in range(3):
        advance(network, 2, except_=["Node C"])
        await service.probe()
    [alert] = await service.alerts("stale")
    assert alert["provider"] == "Node C"


async def test_a_node_answering_bsc_chain_id_in_an_ethereum_group_is_wrong_chain(
    service: Service, network: Network
) -> None:
    network.chain_ids["Node B"] = "0x38"
    await service.probe()
    [alert] = await service.alerts("wrong_chain")
    assert (alert["provider"], alert["severity"]) == ("Node B", "critical")
    network.chain_ids["Node B"] = "0x1"
    await service.probe()
    [alert] = await service.alerts("wrong_chain")
    assert alert["resolved_at"] is not None


async def test_a_price_source_5_percent_off_raises_the_deviation_alert_which_resolves(
    service: Service, network: Network
) -> None:
    await service.probe()
    network.prices["Price C"] = 52_500.0
    await service.probe()
    assert await service.alerts("deviation") == []  # K = 2 probes
    await service.probe()
    [alert] = await service.alerts("deviation")
    assert alert["provider"] == "Price C" and alert["resolved_at"] is None
    network.prices["Price C"] = 50_010.0
    await service.probe()
    [alert] = await service.alerts("deviation")
    assert alert["resolved_at"] is not None
