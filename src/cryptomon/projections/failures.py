"""Failure analytics: unsuccessful probes counted per hour, by provider and error kind.

Every probe that did not succeed (failed, timed out or rate limited; health or
collection; not one in a maintenance the provider declared) is counted in the hour
it started. Hours older than
`failure_hour_retention_seconds` before the newest failure are dropped, so the
state is bounded; the most recent failure of each error kind is kept whole.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from cryptomon.events.types import Event, ProbeRecorded
from cryptomon.projections.base import Handler, Projection
from cryptomon.projections.notices import Notice

HOUR = 3600
# Failures recorded without an error kind (events from before kinds existed).
UNKNOWN_KIND = "unknown"


class FailureHour(msgspec.Struct, gc=False):
    failures: int = 0
    by_provider: dict[str, int] = {}
    by_kind: dict[str, int] = {}


class FailuresState(msgspec.Struct, gc=False):
    hours: dict[int, FailureHour] = {}  # by start
    latest: dict[str, ProbeRecorded] = {}  # error kind -> its most recent failure
    newest_hour: int = 0  # start of the newest failure's hour


class ErrorSample(msgspec.Struct, frozen=True, gc=False):
    at: float
    provider: str
    endpoint: str
    message: str | None
    http_status: int | None


class HourCount(msgspec.Struct, frozen=True, gc=False):
    start: int
    failures: int


class ProviderFailures(msgspec.Struct, frozen=True, gc=False):
    provider: str
    failures: int


class FailureAnalysis(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    since: float
    until: float
    total_failures: int
    by_provider: dict[str, int]  # most failures first
    by_error_kind: dict[str, int]  # most failures first
    by_hour: list[HourCount]  # oldest first, hours with failures only
    top_failing_providers: list[ProviderFailures]
    recent_errors: dict[str, ErrorSample]  # error kind -> its latest failure in the window


_decoder = msgspec.msgpack.Decoder(FailuresState)


class FailuresProjection(Projection[FailuresState]):
    name: ClassVar[str] = "failures"
    version: ClassVar[int] = 1

    def new_state(self) -> FailuresState:
        return FailuresState()

    @classmethod
    def decode_state(cls, data: bytes) -> FailuresState:
        return _decoder.decode(data)

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {ProbeRecorded: self._probe}

    def _probe(self, position: int, recorded_at: float, probe: ProbeRecorded) -> list[Notice]:
        if probe.outcome == "success" or probe.outcome == "maintenance":
            return []
        state = self.state
        hour = int(probe.started_at // HOUR) * HOUR
        if hour > state.newest_hour:
            state.newest_hour = hour
            self._prune(hour - self.settings.failure_hour_retention_seconds)
        bucket = state.hours.get(hour)
        if bucket is None:
            bucket = state.hours[hour] = FailureHour()
        kind = probe.error_kind or UNKNOWN_KIND
        bucket.failures += 1
        bucket.by_provider[probe.provider] = bucket.by_provider.get(probe.provider, 0) + 1
        bucket.by_kind[kind] = bucket.by_kind.get(kind, 0) + 1
        latest = state.latest.get(kind)
        if latest is None or probe.started_at >= latest.started_at:
            state.latest[kind] = probe
        return []

    def _prune(self, before: float) -> None:
        hours = self.state.hours
        for start in [start for start in hours if start < before]:
            del hours[start]

    def analyze(self, since: float, until: float, top: int = 10) -> FailureAnalysis:
        """Failures in the hours overlapping [since, until): hour buckets are the finest
        grain kept, so the edges are counted by whole hours."""
        total = 0
        by_provider: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        by_hour: list[HourCount] = []
        for start, bucket in sorted(self.state.hours.items()):
            if start >= until or start + HOUR <= since:
                continue
            total += bucket.failures
            by_hour.append(HourCount(start, bucket.failures))
            for provider, count in bucket.by_provider.items():
                by_provider[provider] = by_provider.get(provider, 0) + count
            for kind, count in bucket.by_kind.items():
                by_kind[kind] = by_kind.get(kind, 0) + count
        ranked = _most_first(by_provider)
        return FailureAnalysis(
            since=since,
            until=until,
            total_failures=total,
            by_provider=ranked,
            by_error_kind=_most_first(by_kind),
            by_hour=by_hour,
            top_failing_providers=[
                ProviderFailures(provider, count) for provider, count in list(ranked.items())[:top]
            ],
            recent_errors={
                kind: ErrorSample(
                    probe.started_at,
                    probe.provider,
                    probe.endpoint,
                    probe.error_message,
                    probe.http_status,
                )
                for kind, probe in sorted(self.state.latest.items())
                if since <= probe.started_at < until
            },
        )


def _most_first(counts: dict[str, int]) -> dict[str, int]:
    """Highest count first; ties by name, so the order is stable."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
