"""Rate-limit usage per provider, as the latest `RateLimitChanged` reported it.

The limit itself first comes from the provider's registration; usage changes
arrive only when they cross a threshold, so between events the figures are
those of the last crossing. A block (`blocked_until`) ends with the first probe
of the provider started after it, since no event marks its end. Usage rising
to the warning level or above emits `RateLimitHigh`, the seed's
`rate_limit_alert`.

A key used from several regions spends its requests in each: each region's instances
report their region's usage of its share (`RateLimitChanged.region`), and the provider's
usage is the sum over its regions, of the sum of their shares (`regions` keeps each
region's last report). A block reported in one region blocks the provider.

A removed provider's entry is kept as it last stood (its history stays queryable).

The history is kept per hour (`UsageHour`) for `HISTORY_SECONDS`, by the events' own
times: the level at the hour's start, the highest the hour reached and the level it ended
at, and whether a block was reported. It costs one small struct per provider and hour
with a change; an hour without one held the level the last one left.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import msgspec

from cryptomon.events.types import (
    Event,
    ProbeRecorded,
    ProviderRegistered,
    RateLimitChanged,
)
from cryptomon.projections.base import Handler, Projection
from cryptomon.projections.notices import Notice, RateLimitHigh

RateLimitStatus = Literal["ok", "warning", "blocked"]


class RegionUsage(msgspec.Struct, gc=False, array_like=True):
    """One region's last report of its usage of its share of a provider's limit."""

    used: int
    limit: int
    blocked_until: float | None = None  # a block it reported, until then


class RateLimitState(msgspec.Struct, gc=False, kw_only=True):
    provider: str
    used: int = 0
    limit: int
    window_seconds: float
    percentage: float = 0.0
    reset_at: float | None = None
    blocked_until: float | None = None
    status: RateLimitStatus = "ok"
    updated_at: float
    # By region, its last report (`used`, `limit` of its share), when usage is regional.
    regions: dict[str, RegionUsage] = {}


class UsageHour(msgspec.Struct, gc=False, array_like=True):
    """One hour of a provider's usage, in percent of its limit: the level it began with,
    the highest it reached (that level included) and the level it ended at."""

    opening: float
    peak: float
    closing: float
    blocked: bool = False  # a block (429, Retry-After) was reported in the hour


class RateLimitsState(msgspec.Struct, gc=False):
    limits: dict[str, RateLimitState] = {}
    # provider -> the start of an hour with a change -> that hour's usage.
    history: dict[str, dict[int, UsageHour]] = {}


HOUR = 3600
# Hours of usage older than this, counted from a provider's newest, are dropped; the
# newest is always kept, so the level it ended at carries on.
HISTORY_SECONDS = 30 * 86_400


_decoder = msgspec.msgpack.Decoder(RateLimitsState)


class RateLimitsProjection(Projection[RateLimitsState]):
    name: ClassVar[str] = "rate_limits"
    # 2: a removed provider's entry is kept, no longer dropped; 3: usage per hour kept
    version: ClassVar[int] = 4  # 4: usage per region

    def new_state(self) -> RateLimitsState:
        return RateLimitsState()

    @classmethod
    def decode_state(cls, data: bytes) -> RateLimitsState:
        return _decoder.decode(data)

    def get(self, provider: str) -> RateLimitState | None:
        return self.state.limits.get(provider)

    def all(self) -> list[RateLimitState]:
        return list(self.state.limits.values())

    def hours(
        self, provider: str, since: float, until: float
    ) -> list[tuple[UsageHour, bool] | None]:
        """Each hour from the one holding `since` to the one holding `until`, oldest first:
        the hour's usage and True when a change was reported in it; else the level the last
        change before it left, and False; None before any change known."""
        kept = self.state.history.get(provider, {})
        first = math.floor(since / HOUR) * HOUR
        last = math.floor(until / HOUR) * HOUR
        earlier = [hour for hour in kept if hour < first]
        level = kept[max(earlier)].closing if earlier else None
        found: list[tuple[UsageHour, bool] | None] = []
        for hour in range(first, last + HOUR, HOUR):
            usage = kept.get(hour)
            if usage is not None:
                found.append((usage, True))
                level = usage.closing
            elif level is None:
                found.append(None)
            else:
                found.append((UsageHour(level, level, level), False))
        return found

    def _record(self, provider: str, at: float, before: float, after: float, blocked: bool) -> None:
        """Usage moved from `before` to `after` (percent) at `at`, in the hour holding it."""
        hours = self.state.history.get(provider)
        if hours is None:
            hours = self.state.history[provider] = {}
        hour = math.floor(at / HOUR) * HOUR
        usage = hours.get(hour)
        if usage is None:
            newest = max(hours, default=hour)
            if hour < newest - HISTORY_SECONDS:
                return  # a late event for an hour dropped already
            hours[hour] = UsageHour(before, max(before, after), after, blocked)
            if hour > newest:
                for old in [old for old in hours if old < hour - HISTORY_SECONDS]:
                    del hours[old]
            return
        usage.peak = max(usage.peak, after)
        usage.closing = after
        usage.blocked = usage.blocked or blocked

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {
            ProbeRecorded: self._probe,
            RateLimitChanged: self._changed,
            ProviderRegistered: self._registered,
        }

    def _probe(self, position: int, recorded_at: float, probe: ProbeRecorded) -> list[Notice]:
        # No event marks the end of a block: a probe started after it does.
        entry = self.state.limits.get(probe.provider)
        if entry is None or entry.blocked_until is None or probe.started_at < entry.blocked_until:
            return []
        entry.blocked_until = None
        entry.status = self._status(entry.percentage, False)
        entry.updated_at = probe.started_at
        return []

    def _status(self, percentage: float, blocked: bool) -> RateLimitStatus:
        if blocked or percentage >= self.settings.rate_limit_critical:
            return "blocked"
        return "warning" if percentage >= self.settings.rate_limit_warning else "ok"

    def _registered(
        self, position: int, recorded_at: float, config: ProviderRegistered
    ) -> list[Notice]:
        spec = config.rate_limit
        entry = self.state.limits.get(config.provider)
        if entry is not None and config.regions:
            # Probed from fewer regions now: the others' usage counts no more.
            entry.regions = {r: u for r, u in entry.regions.items() if r in config.regions}
        if spec is None:
            return []
        at = recorded_at
        if entry is None:
            self.state.limits[config.provider] = RateLimitState(
                provider=config.provider,
                limit=spec.requests,
                window_seconds=spec.per_seconds,
                updated_at=at,
            )
            return []
        if (entry.limit, entry.window_seconds) == (spec.requests, spec.per_seconds):
            return []
        # A new configured limit: the usage last reported stands, measured against it.
        before = entry.percentage
        entry.limit = spec.requests
        entry.window_seconds = spec.per_seconds
        entry.percentage = round(entry.used / entry.limit * 100, 1) if entry.limit else 0.0
        if entry.percentage != before:
            self._record(config.provider, at, before, entry.percentage, False)
        entry.status = self._status(entry.percentage, entry.blocked_until is not None)
        entry.updated_at = at
        return []

    def _changed(self, position: int, recorded_at: float, change: RateLimitChanged) -> list[Notice]:
        settings = self.settings
        entry = self.state.limits.get(change.provider)
        regions = {} if entry is None else entry.regions
        if change.region is not None:
            # The provider's usage: every region's last report, summed; a block one region
            # reported holds until its end whatever the others report.
            regions = {
                **regions,
                change.region: RegionUsage(change.used, change.limit, change.blocked_until),
            }
            used = sum(region.used for region in regions.values())
            limit = sum(region.limit for region in regions.values())
            percentage = round(used / limit * 100, 1) if limit else 0.0
            ends = [
                r.blocked_until
                for r in regions.values()
                if r.blocked_until is not None and r.blocked_until > change.observed_at
            ]
            change = msgspec.structs.replace(
                change,
                used=used,
                limit=limit,
                percentage=percentage,
                blocked_until=max(ends) if ends else None,
            )
        blocked = change.blocked_until is not None and change.blocked_until > change.observed_at
        rose = entry is None or change.percentage > entry.percentage
        newly_blocked = blocked and (entry is None or entry.blocked_until is None)
        before = 0.0 if entry is None else entry.percentage
        self._record(change.provider, change.observed_at, before, change.percentage, blocked)
        self.state.limits[change.provider] = RateLimitState(
            provider=change.provider,
            used=change.used,
            limit=change.limit,
            window_seconds=change.window_seconds,
            percentage=change.percentage,
            reset_at=change.reset_at,
            blocked_until=change.blocked_until if blocked else None,
            status=self._status(change.percentage, blocked),
            updated_at=change.observed_at,
            regions=regions,
        )
        high = blocked or change.percentage >= settings.rate_limit_warning
        if not high or not (rose or newly_blocked):
            return []
        critical = blocked or change.percentage >= settings.rate_limit_notice_critical
        return [
            RateLimitHigh(
                position,
                change.observed_at,
                change.provider,
                change.percentage,
                change.used,
                change.limit,
                "critical" if critical else "warning",
            )
        ]
