"""How long each provider spent in each status, per UTC day: what an uptime report reads.

The metrics rollups count probes; a report's downtime is time, from the status changes
in the log. So the time between two health probes of a provider counts in the status the
first one left it in (or that a change between them, such as a pause, set), split at UTC
midnights into day buckets of seconds by status. The statuses include `maintenance`
(declared by the provider or a maintenance window), which a report leaves out of uptime.

Time more than `GAP_FACTOR` times the last gap between health probes that counted after
the provider's last health probe (the service was stopped, the provider was removed and
added again) counts as `not_probed`: nothing in the log says how the provider stood
then; a paused provider's time is `paused` however long. The first gap of a
provider always counts, having nothing to compare with. The time after a provider's last
health probe counts nowhere until the next one, so a report is as of the last probe of
each provider (`as_of`: the newest time counted).

The projection follows the providers fold's status changes (`observe`), and reads the
health probes itself for their times; both come from events, so a replay counts the same
seconds. Days older than `day_retention_seconds` (as the metrics' day buckets) are
dropped, by event time, once a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import msgspec

from cryptomon.events.types import Event, ProbeRecorded
from cryptomon.projections.base import Handler, Projection
from cryptomon.projections.notices import (
    PROVIDER_STATUSES,
    Notice,
    ProviderStatus,
    ProviderStatusChanged,
)

DAY = 86_400
# A probe this many times later than the usual gap after the one before: not probed between.
GAP_FACTOR = 3.0
TimeKind = ProviderStatus | Literal["not_probed"]
TIME_KINDS: tuple[TimeKind, ...] = (*PROVIDER_STATUSES, "not_probed")
_INDEX: dict[str, int] = {kind: index for index, kind in enumerate(TIME_KINDS)}
_NOT_PROBED, _PAUSED = _INDEX["not_probed"], _INDEX["paused"]


class ProviderTime(msgspec.Struct, gc=False):
    status: int  # the index (in TIME_KINDS) of the status the time from `since` counts in
    since: float  # the time counted up to
    last_probe: float  # the start of its last health probe
    # What the gap rule measures from: its last health probe, or a resumption since.
    evidence: float
    usual_gap: float = 0.0  # the last gap between health probes that counted; 0: none yet
    days: dict[int, list[float]] = {}  # UTC midnight -> seconds by TIME_KINDS index


class DurationsState(msgspec.Struct, gc=False):
    providers: dict[str, ProviderTime] = {}
    as_of: float = 0.0  # the newest time counted, of any provider
    newest_day: int = 0  # of `as_of`, for pruning


_decoder = msgspec.msgpack.Decoder(DurationsState)


class DurationsProjection(Projection[DurationsState]):
    name: ClassVar[str] = "durations"
    version: ClassVar[int] = 1

    def new_state(self) -> DurationsState:
        return DurationsState()

    @classmethod
    def decode_state(cls, data: bytes) -> DurationsState:
        return _decoder.decode(data)

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {ProbeRecorded: self._probe}

    # ---- the fold ------------------------------------------------------------

    def _probe(self, position: int, recorded_at: float, probe: ProbeRecorded) -> list[Notice]:
        if probe.kind != "health":
            return []
        at = probe.started_at
        provider = self.state.providers.get(probe.provider)
        if provider is None:
            self.state.providers[probe.provider] = ProviderTime(_INDEX["unknown"], at, at, at)
            return []
        if at <= provider.last_probe:
            return []  # recorded late: its time is counted already
        resumed = provider.evidence > provider.last_probe
        if self._advance(provider, at) and provider.status != _PAUSED and not resumed:
            provider.usual_gap = at - provider.last_probe
        provider.last_probe = provider.evidence = at
        return []

    def observe(self, notices: Sequence[Notice]) -> None:
        """Follow the status changes one event caused: the time from each counts in its
        new status. Called after the event's handlers, so a probe's time up to its start
        counts in the status before it."""
        for notice in notices:
            if type(notice) is not ProviderStatusChanged:
                continue
            provider = self.state.providers.get(notice.provider)
            if provider is None:
                # A change before any health probe (a pause): time counts from it.
                provider = ProviderTime(_INDEX["unknown"], notice.at, notice.at, notice.at)
                self.state.providers[notice.provider] = provider
            self._advance(provider, notice.at)
            if provider.status == _PAUSED:
                # Resumed: the time to its next probe is the wait for it, not a gap.
                provider.evidence = max(provider.evidence, notice.at)
            provider.status = _INDEX[notice.new_status]

    def _advance(self, provider: ProviderTime, until: float) -> bool:
        """Count the time up to `until` in the provider's status, or as not probed when its
        last health probe is too long before (see the top); whether it counted as probed.
        A paused provider is not probed by design: its time is paused."""
        kind = provider.status
        if (
            kind != _PAUSED
            and provider.usual_gap
            and until - provider.evidence > GAP_FACTOR * provider.usual_gap
        ):
            kind = _NOT_PROBED
        self._count(provider, until, kind)
        return kind != _NOT_PROBED

    def _count(self, provider: ProviderTime, until: float, kind: int) -> None:
        """Count the time from `provider.since` to `until` in `kind`, day by day."""
        start = provider.since
        if until <= start:
            return
        provider.since = until
        days = provider.days
        while start < until:
            day = int(start // DAY) * DAY
            end = min(until, day + DAY)
            seconds = days.get(day)
            if seconds is None:
                seconds = days[day] = [0.0] * len(TIME_KINDS)
            seconds[kind] += end - start
            start = end
        state = self.state
        if until > state.as_of:
            state.as_of = until
            newest_day = int(until // DAY) * DAY
            if newest_day > state.newest_day:
                state.newest_day = newest_day
                self._prune(newest_day - self.settings.day_retention_seconds)

    def _prune(self, before: float) -> None:
        for provider in self.state.providers.values():
            for day in [day for day in provider.days if day < before]:
                del provider.days[day]

    # ---- queries -------------------------------------------------------------

    def seconds(self, provider: str, first_day: int, end_day: int) -> dict[TimeKind, float]:
        """The seconds `provider` spent in each status (and not probed) in the UTC days
        from `first_day` up to `end_day` (midnights), counted up to its last health
        probe; every kind present, 0 for none."""
        if first_day % DAY or end_day % DAY:
            raise ValueError("first_day and end_day must be UTC midnights")
        totals = [0.0] * len(TIME_KINDS)
        found = self.state.providers.get(provider)
        if found is not None:
            days = found.days
            if (end_day - first_day) // DAY < len(days):
                spans = (days.get(day) for day in range(first_day, end_day, DAY))
            else:
                spans = (seconds for day, seconds in days.items() if first_day <= day < end_day)
            for seconds in spans:
                if seconds is not None:
                    for index, value in enumerate(seconds):
                        totals[index] += value
        return dict(zip(TIME_KINDS, totals, strict=True))
