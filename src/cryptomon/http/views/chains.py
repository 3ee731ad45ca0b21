"""`/api/chains`: each chain's best head and how each of its nodes stands against it."""

from __future__ import annotations

from aiohttp import web

from cryptomon.http.errors import NotFound
from cryptomon.http.keys import ARGUMENTS
from cryptomon.http.schemas import (
    ChainList,
    ChainNodeSummary,
    ChainNodeView,
    ChainRulesView,
    ChainSummary,
    ChainView,
    LagHourView,
)
from cryptomon.http.views import models_of, respond, rounded
from cryptomon.isotime import iso_time
from cryptomon.projections.chains import Chain, ChainsProjection, LagHour, Node

_HOUR = 3600


def _summary(chain: Chain) -> ChainSummary:
    return ChainSummary(
        name=chain.name,
        best_head=chain.best,
        best_at=iso_time(chain.best_at),
        block_rate=rounded(chain.rate, 4),
        node_count=len(chain.nodes),
        nodes=[
            ChainNodeSummary(provider=n.provider, head=n.head, lag=n.lag, states=list(n.states))
            for n in sorted(chain.nodes.values(), key=lambda node: node.provider)
        ],
    )


def _hour(bucket: LagHour) -> LagHourView:
    return LagHourView(
        hour=iso_time(float(bucket.hour * _HOUR)),
        probes=bucket.probes,
        mean_lag=round(bucket.lag_sum / bucket.probes, 2) if bucket.probes else 0.0,
        max_lag=bucket.lag_max,
    )


def _node(chain: Chain, node: Node) -> ChainNodeView:
    # From the log's own time (the chain's latest judged probe), not the wall clock.
    still = (
        max(0.0, chain.best_at - node.moved_at)
        if chain.best_at is not None and node.moved_at is not None
        else None
    )
    return ChainNodeView(
        provider=node.provider,
        head=node.head,
        head_at=iso_time(node.head_at),
        succeeded=node.succeeded,
        lag=node.lag,
        lag_seconds=rounded(node.lag_seconds, 2),
        seconds_since_head_moved=rounded(still, 3),
        head_moved_at=iso_time(node.moved_at),
        chain_id=node.chain_id,
        states=list(node.states),
        block_rate=rounded(node.rate, 4),
        history=[_hour(bucket) for bucket in node.history],
    )


def _view(chains: ChainsProjection, chain: Chain) -> ChainView:
    rules = chains.rules(chain.name)
    return ChainView(
        name=chain.name,
        best_head=chain.best,
        best_at=iso_time(chain.best_at),
        block_rate=rounded(chain.rate, 4),
        rules=ChainRulesView(
            chain_id=rules.chain_id,
            lag_blocks=rules.lag_blocks,
            lag_probes=rules.lag_probes,
            stale_blocks=rules.stale_blocks,
            stale_after_seconds=rules.stale_after_seconds,
        ),
        nodes=[
            _node(chain, node)
            for node in sorted(chain.nodes.values(), key=lambda node: node.provider)
        ],
    )


async def chains(request: web.Request) -> web.Response:
    found = [_summary(chain) for chain in models_of(request).projections.chains.all()]
    return respond(ChainList(count=len(found), chains=found))


async def chain(request: web.Request) -> web.Response:
    name = request[ARGUMENTS].path("chain")
    projection = models_of(request).projections.chains
    found = projection.get(name)
    if found is None:
        raise NotFound("chain", f"no chain named {name[:100]!r}; see /api/chains")
    return respond(_view(projection, found))
