"""Rate-limit usage per provider: our own count, corrected by the provider's headers.

Every outbound request is counted in a sliding window against the configured
limit. When a provider reports its own numbers (`X-RateLimit-*`, Binance's
`X-MBX-USED-WEIGHT-1M`, `Retry-After`), those win. A `RateLimitChanged`
event comes out only when usage crosses a threshold (either way), when the
provider reports a new limit, or when it tells us to back off: never once per
request.

An instance with a region budgets its region's share: a key used from N regions
spends N times the requests, so the tracker counts its own region's requests
against the limit divided by N (`share`). A provider's own figures count every
region's requests (or, for a limit per address, this one's against the whole),
so they are divided by N too: the percentage stays the provider's. With one
region, or none, the figures are the provider's as ever.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from cryptomon.events.types import RateLimitChanged

THRESHOLDS = (50.0, 80.0, 90.0, 100.0)
# When a 429 says nothing about when to come back, wait this long.
DEFAULT_BACKOFF_SECONDS = 60.0
# X-RateLimit-Reset holds either seconds from now or a unix time; a value this
# large can only be a unix time.
_EPOCH_CUTOFF = 1_000_000_000
_LEADING_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)")


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    match = _LEADING_NUMBER.match(value)
    return float(match.group(1)) if match else None


def _retry_after(value: str | None, now: float) -> float | None:
    """Retry-After is seconds or an HTTP date; return the unix time it names."""
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return now + seconds
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def threshold_level(percentage: float) -> float:
    """The highest threshold reached (0 when under all of them)."""
    return max((t for t in THRESHOLDS if percentage >= t), default=0.0)


def _ceil_share(value: int, regions: int) -> int:
    return -(-value // regions)


class RateLimitTracker:
    """Usage of one provider's rate limit, fed by each request and response; with a
    `region`, that region's share of it (`regions` regions spend the key)."""

    def __init__(
        self,
        provider: str,
        limit: int | None,
        window_seconds: float,
        *,
        region: str | None = None,
        regions: int = 1,
    ) -> None:
        self.provider = provider
        # The key's whole limit: the configured one, or the one the provider reports.
        self.full_limit = limit
        self.region = region
        self.regions = max(1, regions)
        self.window_seconds = window_seconds
        self._sent: deque[float] = deque()
        self._reported_used: int | None = None
        self._reported_at = 0.0
        self.reset_at: float | None = None
        self.blocked_until: float | None = None
        self._level = 0.0

    @property
    def limit(self) -> int | None:
        """The limit this tracker budgets: the region's share of the key's (at least 1)."""
        if not self.full_limit:
            return self.full_limit
        return max(1, self.full_limit // self.regions)

    def share(self, regions: int) -> None:
        """Budget a share among `regions` regions from now on (the next event says the
        new figures; one comes when that moves usage across a threshold)."""
        regions = max(1, regions)
        if regions == self.regions:
            return
        if self._reported_used is not None:
            # Held as this region's share: rescaled to the new one.
            self._reported_used = _ceil_share(self._reported_used * self.regions, regions)
        self.regions = regions

    def used(self, now: float) -> int:
        while self._sent and self._sent[0] <= now - self.window_seconds:
            self._sent.popleft()
        counted = len(self._sent)
        if self._reported_used is not None and now - self._reported_at < self.window_seconds:
            # The provider's figure, plus what we sent since it answered.
            since = sum(1 for t in self._sent if t > self._reported_at)
            return max(counted, self._reported_used + since)
        return counted

    def percentage(self, now: float) -> float:
        if not self.limit:
            return 0.0
        return round(self.used(now) / self.limit * 100, 1)

    def is_blocked(self, now: float) -> bool:
        return self.blocked_until is not None and now < self.blocked_until

    def _snapshot(self, now: float, reason: str) -> RateLimitChanged:
        return RateLimitChanged(
            provider=self.provider,
            used=self.used(now),
            limit=self.limit or 0,
            window_seconds=self.window_seconds,
            percentage=self.percentage(now),
            observed_at=now,
            reset_at=self.reset_at,
            reason=reason,
            blocked_until=self.blocked_until if self.is_blocked(now) else None,
            region=self.region,
        )

    def refresh(self, now: float) -> RateLimitChanged | None:
        """An event if usage crossed a threshold since the last one, as when
        requests age out of the window."""
        level = threshold_level(self.percentage(now))
        if level == self._level:
            return None
        reason = "threshold_up" if level > self._level else "threshold_down"
        self._level = level
        return self._snapshot(now, reason)

    def record_request(self, now: float) -> RateLimitChanged | None:
        """Count one outbound request; an event if that crossed a threshold."""
        self._sent.append(now)
        return self.refresh(now)

    def observe_response(
        self, status: int | None, headers: Mapping[str, str], now: float
    ) -> list[RateLimitChanged]:
        """Take the provider's own figures from a response; events for what changed."""
        lowered = {k.lower(): v for k, v in headers.items()}
        changes: list[RateLimitChanged] = []
        reported_limit = _number(lowered.get("x-ratelimit-limit"))
        if reported_limit is not None and int(reported_limit) != self.full_limit:
            self.full_limit = int(reported_limit)
            self._level = threshold_level(self.percentage(now))
            changes.append(self._snapshot(now, "limit_reported"))
        remaining = _number(lowered.get("x-ratelimit-remaining"))
        weight = _number(lowered.get("x-mbx-used-weight-1m"))
        reported: int | None = None
        if weight is not None:
            reported = int(weight)
        elif remaining is not None and self.full_limit:
            reported = max(0, self.full_limit - int(remaining))
        if reported is not None:
            self._reported_used, self._reported_at = _ceil_share(reported, self.regions), now
        reset = _number(lowered.get("x-ratelimit-reset"))
        if reset is not None:
            self.reset_at = reset if reset > _EPOCH_CUTOFF else now + reset
        retry_at = _retry_after(lowered.get("retry-after"), now)
        if status == 429 or retry_at is not None:
            until = retry_at or self.reset_at or now + DEFAULT_BACKOFF_SECONDS
            if until > now and (self.blocked_until is None or until > self.blocked_until):
                self.blocked_until = until
                self._level = threshold_level(self.percentage(now))
                changes.append(self._snapshot(now, "blocked"))
                return changes
        crossed = self.refresh(now)
        if crossed is not None:
            changes.append(crossed)
        return changes
