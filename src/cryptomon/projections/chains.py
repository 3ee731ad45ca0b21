"""Chains: each node's head against the best head of the nodes of its chain.

A provider registered with a `chain` is a node of that chain; its probes observe its
`head` (block number, slot, tip height) and may observe its `chain_id`. Every
judgement of a node is made at its own probe, from the events alone:

- **Best head**, as of the probe: the highest head that at least two nodes on the
  right chain whose last probe succeeded have reached (the second highest of their
  heads), so one runaway node cannot make every other look behind; with one node, its
  own head.
- **A common time.** Nodes are probed at different phases, and a probe that started
  later may be recorded first. Each other node's head counts as of this probe's start:
  one observed earlier as it is (the head now is at least that), one observed later
  less the blocks the chain made in between, at the chain's block rate (the median of
  the nodes' own rates, each measured over at least `RATE_SPAN_SECONDS` of its heads;
  until the log shows a rate, a later head does not count).
  So a node is never behind because the chain moved between two probes; the price is
  that a lag can read short by the blocks made since the others were probed (at most
  the rate times the probe interval), never long.
- **Lag**: blocks behind that best head, rounded down, never negative. **Lagging**:
  more than `lag_blocks` behind for `lag_probes` probes in a row; ends at the first
  probe within `lag_blocks`.
- **Stale**: the head has not moved while the best head moved more than
  `stale_blocks` since it last moved. A chain with one node: it has not moved for
  `stale_after_seconds`. Ends when the head moves.
- **Wrong chain**: its `chain_id` is not the chain's.

Each state entering or leaving is a `Judged` notice; the providers projection degrades
the provider while one holds and the alerts projection raises an alert of its kind.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection
from typing import ClassVar

import msgspec

from cryptomon.config import parse_uint
from cryptomon.events.types import (
    Event,
    ObservedValue,
    ProbeRecorded,
    ProviderPaused,
    ProviderRegistered,
    ProviderRemoved,
    ProviderResumed,
)
from cryptomon.isotime import iso_time
from cryptomon.projections.base import Handler, JudgingProjection
from cryptomon.projections.notices import Judged, Judgement, Notice
from cryptomon.projections.settings import ChainSettings, ProjectionSettings

# A node's block rate is measured over at least this long a stretch of its own heads.
RATE_SPAN_SECONDS = 300.0
# Hourly lag rollups are kept this long.
LAG_HISTORY_SECONDS = 7 * 86_400.0
_HOUR = 3600.0


class ChainDefaults(msgspec.Struct, frozen=True, gc=False):
    chain_id: int | None  # None: the chain has no EVM chain id to check
    lag_blocks: int
    stale_blocks: int
    stale_after_seconds: float


# Thresholds fit to each chain's block time: about 30 s of blocks for a lag (one
# block for Bitcoin, whose blocks come every 10 min or so), the same again for
# staleness; a lone node is stale after minutes without a new block (2 h for Bitcoin).
CHAIN_DEFAULTS: dict[str, ChainDefaults] = {
    "ethereum": ChainDefaults(1, 3, 3, 120.0),  # a slot every 12 s
    "bitcoin": ChainDefaults(None, 1, 1, 7200.0),
    "solana": ChainDefaults(None, 50, 100, 60.0),  # a slot every 0.4 s
    "bsc": ChainDefaults(56, 20, 20, 60.0),  # 0.75 s
    "base": ChainDefaults(8453, 10, 10, 60.0),  # 2 s
    "optimism": ChainDefaults(10, 10, 10, 60.0),  # 2 s
    "polygon": ChainDefaults(137, 10, 10, 60.0),  # 2 s
    "arbitrum": ChainDefaults(42161, 40, 40, 60.0),  # 0.25 s
    "avalanche": ChainDefaults(43114, 10, 10, 60.0),  # ~2 s
}
OTHER_CHAIN = ChainDefaults(None, 5, 5, 300.0)
DEFAULT_LAG_PROBES = 2


class ChainRules(msgspec.Struct, frozen=True, gc=False):
    """One chain's thresholds: its `[chains.<name>]` keys over its defaults."""

    chain_id: int | None
    lag_blocks: int
    lag_probes: int
    stale_blocks: int
    stale_after_seconds: float


def chain_rules(name: str, configured: ChainSettings | None) -> ChainRules:
    default = CHAIN_DEFAULTS.get(name, OTHER_CHAIN)
    given = configured or ChainSettings(name=name)
    return ChainRules(
        chain_id=given.chain_id if given.chain_id is not None else default.chain_id,
        lag_blocks=given.lag_blocks if given.lag_blocks is not None else default.lag_blocks,
        lag_probes=given.lag_probes if given.lag_probes is not None else DEFAULT_LAG_PROBES,
        stale_blocks=(
            given.stale_blocks if given.stale_blocks is not None else default.stale_blocks
        ),
        stale_after_seconds=(
            given.stale_after_seconds
            if given.stale_after_seconds is not None
            else default.stale_after_seconds
        ),
    )


class LagHour(msgspec.Struct, gc=False):
    """One hour of a node's lag, as measured at its probes."""

    hour: int  # unix time // 3600
    probes: int = 0
    lag_sum: int = 0
    lag_max: int = 0


class Node(msgspec.Struct, gc=False, kw_only=True):
    provider: str
    paused: bool = False  # from `ProviderPaused` to `ProviderResumed`: its probes count not
    head: int | None = None
    head_at: float | None = None  # the start of the probe that observed it
    endpoint: str | None = None  # the probe that observes the head
    succeeded: bool = False  # whether that probe's last run succeeded
    moved_at: float | None = None  # when the head last moved
    best_when_moved: int | None = None  # the best head then, or its own if higher
    chain_id: int | None = None  # as last observed
    lag: int | None = None  # at the last probe
    lag_seconds: float | None = None
    over: int = 0  # probes in a row more than lag_blocks behind
    states: list[Judgement] = []  # the judgements that hold, in the order they began
    rate: float | None = None  # blocks per second, over its own heads
    rate_head: int | None = None  # where its rate is measured from
    rate_at: float | None = None
    history: list[LagHour] = []  # oldest first


class Chain(msgspec.Struct, gc=False, kw_only=True):
    name: str
    best: int | None = None  # the best head at the last probe of any node
    best_at: float | None = None
    rate: float | None = None  # blocks per second: the median of the nodes' rates
    nodes: dict[str, Node] = {}


class ChainsState(msgspec.Struct, gc=False):
    chains: dict[str, Chain] = {}
    chain_of: dict[str, str] = {}  # provider -> chain


_decoder = msgspec.msgpack.Decoder(ChainsState)


def _block(value: ObservedValue | None) -> int | None:
    """A head as observed: "0x..." (what eth_blockNumber answers) read directly, anything
    else as `parse_uint` reads it."""
    if type(value) is str and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            return None
    return parse_uint(value)


def best_head(heads: list[float]) -> int:
    """The highest head that at least two of `heads` have reached (the second highest),
    rounded down; with one head, that one."""
    if len(heads) == 1:
        return int(heads[0])
    first = second = -1.0
    for value in heads:
        if value > first:
            first, second = value, first
        elif value > second:
            second = value
    return int(second)


class ChainsProjection(JudgingProjection[ChainsState]):
    name: ClassVar[str] = "chains"
    version: ClassVar[int] = 1

    def __init__(self, settings: ProjectionSettings, state: ChainsState | None = None) -> None:
        super().__init__(settings, state)
        configured = {chain.name: chain for chain in settings.chains}
        self._configured = configured
        self._rules: dict[str, ChainRules] = {}

    def new_state(self) -> ChainsState:
        return ChainsState()

    @classmethod
    def decode_state(cls, data: bytes) -> ChainsState:
        return _decoder.decode(data)

    def rules(self, chain: str) -> ChainRules:
        rules = self._rules.get(chain)
        if rules is None:
            rules = self._rules[chain] = chain_rules(chain, self._configured.get(chain))
        return rules

    # ---- queries -------------------------------------------------------------

    def all(self) -> list[Chain]:
        return sorted(self.state.chains.values(), key=lambda chain: chain.name)

    def get(self, name: str) -> Chain | None:
        return self.state.chains.get(name)

    def node(self, provider: str) -> Node | None:
        chain = self.state.chain_of.get(provider)
        return None if chain is None else self.state.chains[chain].nodes.get(provider)

    def chain_of(self, provider: str) -> Chain | None:
        """The chain the provider is a node of, if any."""
        name = self.state.chain_of.get(provider)
        return None if name is None else self.state.chains[name]

    # ---- the fold ------------------------------------------------------------

    def members(self) -> Collection[str]:
        return self.state.chain_of.keys()

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {
            ProviderRegistered: self._registered,
            ProviderRemoved: self._removed,
            ProviderPaused: self._paused,
            ProviderResumed: self._resumed,
            ProbeRecorded: self._probe,
        }

    def _registered(
        self, position: int, recorded_at: float, config: ProviderRegistered
    ) -> list[Notice]:
        provider = config.provider
        current = self.state.chain_of.get(provider)
        if current == config.chain:
            return []
        notices = self.forwarded(self._leave(position, recorded_at, provider))
        if config.chain is not None:
            chain = self.state.chains.get(config.chain)
            if chain is None:
                chain = self.state.chains[config.chain] = Chain(name=config.chain)
            chain.nodes[provider] = Node(provider=provider)
            self.state.chain_of[provider] = config.chain
        return notices

    def _paused(self, position: int, recorded_at: float, pause: ProviderPaused) -> list[Notice]:
        name = self.state.chain_of.get(pause.provider)
        if name is None:
            return []
        member = self.state.chains[name].nodes[pause.provider]
        return self.rest(position, recorded_at, f"chain:{name}", member)

    def _resumed(self, position: int, recorded_at: float, resume: ProviderResumed) -> list[Notice]:
        name = self.state.chain_of.get(resume.provider)
        if name is not None:
            self.state.chains[name].nodes[resume.provider].paused = False
        return []

    def _removed(self, position: int, recorded_at: float, removal: ProviderRemoved) -> list[Notice]:
        return self.forwarded(self._leave(position, recorded_at, removal.provider))

    def _leave(self, position: int, at: float, provider: str) -> list[Notice]:
        """The provider is no node of its chain any more: its states end."""
        name = self.state.chain_of.pop(provider, None)
        if name is None:
            return []
        chain = self.state.chains[name]
        node = chain.nodes.pop(provider)
        if not chain.nodes:
            del self.state.chains[name]
        return [
            Judged(position, at, provider, f"chain:{name}", state, False, "no longer a node")
            for state in node.states
        ]

    def _probe(self, position: int, recorded_at: float, probe: ProbeRecorded) -> list[Notice]:
        """Judge a node at its probe. Written out in one function: this runs at every probe
        of every node."""
        provider = probe.provider
        name = self.state.chain_of.get(provider)
        if name is None:
            return []
        chain = self.state.chains[name]
        node = chain.nodes[provider]
        if node.paused:
            return []
        observed = probe.observations
        value = observed.get("head") if observed else None
        head: int | None
        if type(value) is str and value.startswith("0x"):  # what eth_blockNumber answers
            try:
                head = int(value, 16)
            except ValueError:
                head = None
        else:
            head = _block(value)
        if head is None or probe.outcome != "success":
            # A failed probe's head (observed though a condition failed) is no head the
            # chain can count on; nor is a head that never came.
            if probe.outcome != "success" and (head is not None or probe.endpoint == node.endpoint):
                node.succeeded = False
            if observed and "chain_id" in observed:
                return self.forwarded(self._chain_id(position, probe, chain, node))
            return []
        node.endpoint = probe.endpoint
        node.succeeded = True
        at = probe.started_at
        rate_at, rate_head = node.rate_at, node.rate_head
        if rate_at is None or rate_head is None or head < rate_head:
            node.rate_head, node.rate_at = head, at
        elif at - rate_at >= RATE_SPAN_SECONDS:
            self._measure_rate(chain, node, head, at)
        best = self._best_head(chain, node, head, at)
        chain.best, chain.best_at = best, at
        rules = self._rules.get(name) or self.rules(name)
        lag = best - head if best > head else 0
        node.lag = lag
        rate = chain.rate
        node.lag_seconds = lag / rate if rate else None
        # The hour's lag rollup (a probe from an earlier hour, clocks not being monotonic,
        # counts in the last one).
        history = node.history
        hour = int(at // _HOUR)
        bucket = history[-1] if history and history[-1].hour >= hour else _new_hour(history, hour)
        bucket.probes += 1
        bucket.lag_sum += lag
        if lag > bucket.lag_max:
            bucket.lag_max = lag
        notices: list[Notice] = []
        states = node.states
        over = node.over = node.over + 1 if lag > rules.lag_blocks else 0
        if states or over >= rules.lag_probes:
            lagging = over >= rules.lag_probes
            if lagging != ("lagging" in states):
                details = (
                    f"{lag} blocks behind the best head {best} for {over} probes"
                    f" (more than {rules.lag_blocks} is lagging)"
                    if lagging
                    else f"{lag} blocks behind the best head {best}: caught up"
                )
                notices.append(
                    self.flip(position, at, f"chain:{name}", node, "lagging", lagging, details)
                )
        if head != node.head:
            # The best head then, or its own if it was ahead: the group catching up with it
            # is not the group moving on without it.
            node.moved_at, node.best_when_moved = at, best if best > head else head
            if states and "stale" in states:
                details = f"head moved to {head}"
                notices.append(
                    self.flip(position, at, f"chain:{name}", node, "stale", False, details)
                )
        elif "stale" not in states:
            notices += self._stale(position, at, chain, node, head, best, rules)
        node.head, node.head_at = head, at
        if observed is not None and "chain_id" in observed:
            notices += self._chain_id(position, probe, chain, node)
        return self.forwarded(notices) if notices else notices

    def _measure_rate(self, chain: Chain, node: Node, head: int, at: float) -> None:
        """The node's rate over the span since `rate_at` (at least `RATE_SPAN_SECONDS`),
        and the chain's from its nodes'."""
        assert node.rate_at is not None and node.rate_head is not None
        node.rate = (head - node.rate_head) / (at - node.rate_at)
        node.rate_head, node.rate_at = head, at
        rates = [n.rate for n in chain.nodes.values() if n.rate is not None]
        chain.rate = statistics.median(rates)

    def _best_head(self, chain: Chain, node: Node, head: int, at: float) -> int:
        """The best head as of `at`: this node's new head with the others whose last probe
        succeeded. A head observed before `at` counts as it is (the chain only grows: the
        head at `at` is at least that); one observed after `at` (a probe that started later
        but was recorded first) less the blocks the chain made in between, at its rate."""
        rate = chain.rate
        # The second highest of the heads, this one included (see `best_head`), inline:
        # this runs at every probe of every node.
        first, second = float(head), -1.0
        for other in chain.nodes.values():
            # A node whose last probe succeeded has a head (`_probe` sets both).
            if not other.succeeded or other is node:
                continue
            if other.states and "wrong_chain" in other.states:
                continue  # another chain's head says nothing of this one's
            other_head, other_at = other.head, other.head_at
            assert other_head is not None and other_at is not None
            if other_at <= at:
                value = float(other_head)
            elif rate is not None:  # until the log shows the rate, a later head can't count
                value = other_head - rate * (other_at - at)
            else:
                continue
            if value > first:
                first, second = value, first
            elif value > second:
                second = value
        return int(second) if second >= 0 else head

    def _stale(
        self,
        position: int,
        at: float,
        chain: Chain,
        node: Node,
        head: int,
        best: int,
        rules: ChainRules,
    ) -> list[Notice]:
        """Whether a node whose head did not move has gone stale."""
        assert node.moved_at is not None and node.best_when_moved is not None
        if len(chain.nodes) == 1:
            still = at - node.moved_at
            if still <= rules.stale_after_seconds:
                return []
            details = (
                f"head {head} has not moved for {still:.0f} s"
                f" (more than {rules.stale_after_seconds:g} s is stale)"
            )
        else:
            moved_by = best - node.best_when_moved
            if moved_by <= rules.stale_blocks:
                return []
            details = (
                f"head {head} has not moved since {iso_time(node.moved_at)} while the best"
                f" head moved {moved_by} blocks (more than {rules.stale_blocks} is stale)"
            )
        return [self.flip(position, at, f"chain:{chain.name}", node, "stale", True, details)]

    def _chain_id(
        self, position: int, probe: ProbeRecorded, chain: Chain, node: Node
    ) -> list[Notice]:
        assert probe.observations is not None
        seen = parse_uint(probe.observations["chain_id"])
        node.chain_id = seen
        expected = self.rules(chain.name).chain_id
        if expected is None or seen is None:
            return []
        wrong = seen != expected
        if wrong == ("wrong_chain" in node.states):
            return []
        details = (
            f"answers chain id {seen} ({hex(seen)}); {chain.name} is {expected} ({hex(expected)})"
            if wrong
            else f"answers chain id {seen}, {chain.name}'s"
        )
        return [
            self.flip(
                position,
                probe.started_at,
                f"chain:{chain.name}",
                node,
                "wrong_chain",
                wrong,
                details,
            )
        ]


def _new_hour(history: list[LagHour], hour: int) -> LagHour:
    """A new hour's lag rollup at the end of `history`, dropping those past the retention."""
    bucket = LagHour(hour)
    history.append(bucket)
    oldest = hour - int(LAG_HISTORY_SECONDS // _HOUR)
    while history[0].hour < oldest:
        del history[0]
    return bucket
