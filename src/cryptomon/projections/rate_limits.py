"""Rate-limit usage per provider, as the latest `RateLimitChanged` reported it.

The limit itself first comes from the provider's registration; usage changes
arrive only when they cross a threshold, so between events the figures are
those of the last crossing. A block (`blocked_until`) ends with the first probe
of the provider started after it, since no event marks its end. Usage rising
to the warning level or above emits `RateLimitHigh`, the seed's
`rate_limit_alert`.

A removed provider's entry is kept as it last stood (its history stays queryable).
"""

from __future__ import annotations

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


class RateLimitsState(msgspec.Struct, gc=False):
    limits: dict[str, RateLimitState] = {}


_decoder = msgspec.msgpack.Decoder(RateLimitsState)


class RateLimitsProjection(Projection[RateLimitsState]):
    name: ClassVar[str] = "rate_limits"
    # 2: a removed provider's entry is kept, no longer dropped
    version: ClassVar[int] = 2

    def new_state(self) -> RateLimitsState:
        return RateLimitsState()

    @classmethod
    def decode_state(cls, data: bytes) -> RateLimitsState:
        return _decoder.decode(data)

    def get(self, provider: str) -> RateLimitState | None:
        return self.state.limits.get(provider)

    def all(self) -> list[RateLimitState]:
        return list(self.state.limits.values())

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
        if spec is None:
            return []
        at = recorded_at
        entry = self.state.limits.get(config.provider)
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
        entry.limit = spec.requests
        entry.window_seconds = spec.per_seconds
        entry.percentage = round(entry.used / entry.limit * 100, 1) if entry.limit else 0.0
        entry.status = self._status(entry.percentage, entry.blocked_until is not None)
        entry.updated_at = at
        return []

    def _changed(self, position: int, recorded_at: float, change: RateLimitChanged) -> list[Notice]:
        settings = self.settings
        entry = self.state.limits.get(change.provider)
        blocked = change.blocked_until is not None and change.blocked_until > change.observed_at
        rose = entry is None or change.percentage > entry.percentage
        newly_blocked = blocked and (entry is None or entry.blocked_until is None)
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
