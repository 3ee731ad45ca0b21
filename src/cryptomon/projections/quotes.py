"""Quotes: each provider's price of a pair against the median of every source of it.

A provider registered with a `quote` (a pair such as `BTC-USD`) is a source of that
pair; its probes observe its `price`, and may observe `price_time`, the time its
answer says the data is from. Every judgement of a source is made at its own probe:

- **Median**: of the latest prices of the pair's sources whose last quote succeeded
  and was observed at most `QUOTE_WINDOW_SECONDS` before this probe, this one
  included. Fewer than `MIN_SOURCES` such sources: no median, and no deviation judged.
- **Deviation**: the source's price off the median, in percent. **Deviating**: more
  than `quote_deviation_percent` off for `quote_deviation_probes` probes in a row;
  ends at the first probe within it.
- **Stale quote**: `price_time` older than `quote_max_staleness_seconds` at the probe;
  ends at the first probe with fresh data.

Each state entering or leaving is a `Judged` notice, as for chains.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime
from typing import ClassVar

import msgspec

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
from cryptomon.projections.settings import ProjectionSettings

# A pair's median needs this many sources: with two, neither can be told wrong.
MIN_SOURCES = 3
# A source's price counts towards the median this long after it was observed.
QUOTE_WINDOW_SECONDS = 300.0
# A `price_time` above this is in milliseconds (1e11 s is the year 5138).
_MILLISECONDS_ABOVE = 1e11


class Source(msgspec.Struct, gc=False, kw_only=True):
    provider: str
    paused: bool = False  # from `ProviderPaused` to `ProviderResumed`: its probes count not
    price: float | None = None
    at: float | None = None  # the start of the probe that observed it
    endpoint: str | None = None
    succeeded: bool = False
    data_time: float | None = None  # when the answer says its price is from
    deviation: float | None = None  # percent off the median, at its last probe
    over: int = 0  # probes in a row more than the threshold off
    states: list[Judgement] = []


class Pair(msgspec.Struct, gc=False, kw_only=True):
    name: str
    median: float | None = None  # at the last probe of any source; None below MIN_SOURCES
    median_at: float | None = None
    counted: int = 0  # the sources that price counted, at the last probe
    sources: dict[str, Source] = {}


class QuotesState(msgspec.Struct, gc=False):
    pairs: dict[str, Pair] = {}
    pair_of: dict[str, str] = {}  # provider -> pair


_decoder = msgspec.msgpack.Decoder(QuotesState)


def as_price(value: ObservedValue | None) -> float | None:
    """A price from an observed value: a number, or a string holding one (APIs such as
    Binance's and Kraken's quote prices as strings)."""
    if type(value) is float:  # the common case: a JSON number
        return value if 0 < value < math.inf else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        price = float(value)
    else:
        try:
            price = float(value)
        except ValueError:
            return None
    return price if 0 < price < math.inf else None


def as_time(value: ObservedValue | None) -> float | None:
    """Unix seconds from an observed time: seconds or milliseconds as a number or a
    numeric string, or ISO 8601 text."""
    if type(value) is float:  # the common case: a JSON number
        number = value
    elif isinstance(value, bool) or value is None:
        return None
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return None
            # A time without a zone is UTC, whatever the machine's zone: replay == live.
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    else:
        number = float(value)
    return number / 1000 if number > _MILLISECONDS_ABOVE else number


class QuotesProjection(JudgingProjection[QuotesState]):
    name: ClassVar[str] = "quotes"
    version: ClassVar[int] = 1

    def __init__(self, settings: ProjectionSettings, state: QuotesState | None = None) -> None:
        super().__init__(settings, state)
        self._max_staleness = settings.quote_max_staleness_seconds

    def new_state(self) -> QuotesState:
        return QuotesState()

    @classmethod
    def decode_state(cls, data: bytes) -> QuotesState:
        return _decoder.decode(data)

    # ---- queries -------------------------------------------------------------

    def all(self) -> list[Pair]:
        return sorted(self.state.pairs.values(), key=lambda pair: pair.name)

    def get(self, name: str) -> Pair | None:
        return self.state.pairs.get(name)

    def source(self, provider: str) -> Source | None:
        pair = self.state.pair_of.get(provider)
        return None if pair is None else self.state.pairs[pair].sources.get(provider)

    # ---- the fold ------------------------------------------------------------

    def members(self) -> Collection[str]:
        return self.state.pair_of.keys()

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
        if self.state.pair_of.get(provider) == config.quote:
            return []
        notices = self.forwarded(self._leave(position, recorded_at, provider))
        if config.quote is not None:
            pair = self.state.pairs.get(config.quote)
            if pair is None:
                pair = self.state.pairs[config.quote] = Pair(name=config.quote)
            pair.sources[provider] = Source(provider=provider)
            self.state.pair_of[provider] = config.quote
        return notices

    def _paused(self, position: int, recorded_at: float, pause: ProviderPaused) -> list[Notice]:
        name = self.state.pair_of.get(pause.provider)
        if name is None:
            return []
        member = self.state.pairs[name].sources[pause.provider]
        return self.rest(position, recorded_at, f"pair:{name}", member)

    def _resumed(self, position: int, recorded_at: float, resume: ProviderResumed) -> list[Notice]:
        name = self.state.pair_of.get(resume.provider)
        if name is not None:
            self.state.pairs[name].sources[resume.provider].paused = False
        return []

    def _removed(self, position: int, recorded_at: float, removal: ProviderRemoved) -> list[Notice]:
        return self.forwarded(self._leave(position, recorded_at, removal.provider))

    def _leave(self, position: int, at: float, provider: str) -> list[Notice]:
        name = self.state.pair_of.pop(provider, None)
        if name is None:
            return []
        pair = self.state.pairs[name]
        source = pair.sources.pop(provider)
        if not pair.sources:
            del self.state.pairs[name]
        return [
            Judged(position, at, provider, f"pair:{name}", state, False, "no longer a source")
            for state in source.states
        ]

    def _probe(self, position: int, recorded_at: float, probe: ProbeRecorded) -> list[Notice]:
        name = self.state.pair_of.get(probe.provider)
        if name is None:
            return []
        pair = self.state.pairs[name]
        source = pair.sources[probe.provider]
        if source.paused:
            return []
        observed = probe.observations
        price = as_price(observed.get("price")) if observed else None
        failed = probe.outcome != "success"
        if price is None or failed:
            # A failed probe's price (observed though a condition failed) does not count.
            if failed and (price is not None or probe.endpoint == source.endpoint):
                source.succeeded = False
            return []
        at = probe.started_at
        source.price, source.at, source.endpoint, source.succeeded = price, at, probe.endpoint, True
        data_time = source.data_time = as_time(observed.get("price_time")) if observed else None
        notices = self._deviation(position, at, pair, source, price)
        # Stale data: judged only when there is a time to judge or a state to end.
        if data_time is not None or source.states:
            stale = data_time is not None and at - data_time > self._max_staleness
            if stale != ("quote_stale" in source.states):
                notices.append(self._staleness(position, at, pair, source, stale))
        return self.forwarded(notices) if notices else notices

    def _deviation(
        self, position: int, at: float, pair: Pair, source: Source, price: float
    ) -> list[Notice]:
        since = at - QUOTE_WINDOW_SECONDS
        prices = [
            other.price
            for other in pair.sources.values()
            if other.succeeded and other.price is not None and (other.at or 0.0) >= since
        ]
        settings = self.settings
        pair.counted = len(prices)
        if len(prices) < MIN_SOURCES:
            pair.median, pair.median_at = None, at
            source.deviation = None
            source.over = 0
            if "deviation" not in source.states:
                return []
            details = f"{len(prices)} sources quote {pair.name}: no median to compare with"
            return [
                self.flip(position, at, f"pair:{pair.name}", source, "deviation", False, details)
            ]
        prices.sort()
        middle = len(prices) // 2
        median = prices[middle] if len(prices) % 2 else (prices[middle - 1] + prices[middle]) / 2
        pair.median, pair.median_at = median, at
        deviation = (price - median) / median * 100
        source.deviation = deviation
        threshold = settings.quote_deviation_percent
        source.over = source.over + 1 if abs(deviation) > threshold else 0
        deviating = source.over >= settings.quote_deviation_probes
        if deviating == ("deviation" in source.states):
            return []
        details = (
            f"{price:g} is {deviation:+.2f}% off the median {median:g} of {len(prices)}"
            f" sources for {source.over} probes (more than {threshold:g}% is deviating)"
            if deviating
            else f"{price:g} is {deviation:+.2f}% off the median {median:g}: back in line"
        )
        return [
            self.flip(position, at, f"pair:{pair.name}", source, "deviation", deviating, details)
        ]

    def _staleness(
        self, position: int, at: float, pair: Pair, source: Source, stale: bool
    ) -> Judged:
        data_time = source.data_time
        if stale and data_time is not None:
            details = (
                f"its data is from {iso_time(data_time)}, {at - data_time:.0f} s before the"
                f" probe (more than {self._max_staleness:g} s is stale)"
            )
        elif data_time is None:
            details = "its answer no longer says when its data is from"
        else:
            details = "its data is fresh"
        return self.flip(position, at, f"pair:{pair.name}", source, "quote_stale", stale, details)
