"""Provider status: what each provider looks like from its probes.

Only health probes move a status; collection probes are recorded as the last
probe (and last error) but judge nothing, since a data endpoint can fail for
reasons of its own. The rules, in order, for a health probe:

- HTTP 429: `rate_limited`, as is a `RateLimitChanged` that blocks us. Any
  other answer ends it (probes are not sent while the block lasts).
- `offline_after_failures` consecutive failures: `offline`, which lasts until
  `online_after_successes` consecutive successes (both as the last `MonitoringChanged`
  folded set them: a threshold changed by a reload judges from its position on). The
  recovery clears the failures from the recent window: the outage was reported, judge
  afresh.
- a success slower than the provider's `degraded_latency_ms`, or any failure
  among the last `recent_window` health probes: `degraded`. A failure ratio judges only
  from `failure_ratio_min_probes` probes in that window (at most the window; the last
  `MonitoringChanged` sets it, and before one that set it, from one probe): with fewer,
  failures change nothing: an `online` or `degraded` provider stays so, any other is
  `unknown` (not judged yet).
- otherwise `online`.

A health probe whose outcome is `maintenance` (the provider's answer said so) makes the
status `maintenance` and counts as neither success nor failure: the next other answer
judges the provider again from where it stood.

A health probe that starts inside a maintenance window covering the provider (see
maintenance.py) makes the status `maintenance`, naming the window, and counts as
neither success nor failure; the provider's counters and recent probes are cleared. The
first health probe after the window judges the provider afresh, and the judgements that
still hold are announced again (`Judged`), so whatever is still wrong raises its alerts.
Each entry and exit is a `MaintenanceChanged` notice.

A health probe that carries a region (its instance's `[instance] region`) is judged by
the rules above in that region alone (`regions`: each region's own counters, status
and the reason for it), and the provider's probe status follows from the regions that
report (`overall`, the table in the README): every reporting region agreeing gives
their status; regions that disagree give `degraded` with the reason `regional`, naming
each region that does not see it online; a region whose state is unknown (not judged
yet, or lost: `RegionLost`, from that position on) does not count; none reporting gives
`unknown`. Probes without a region judge the provider itself, exactly as before regions.

A provider registered without its API key is `unconfigured` until registered
with one; its probes (if any) are recorded but do not change that.

A judgement against its chain or pair (lagging, stale, wrong chain, deviating, a stale
quote: see chains.py and quotes.py) makes an `online` provider `degraded` while it
holds, with the judgement as the reason (`judge`). The status its probes alone give
is kept as `probe_status`.

A removed provider (`ProviderRemoved`) is kept, marked `removed` with the time of its
removal: its last status, probes and observations stay to be read, and it counts in no
summary. Probes folded after its removal (in flight when it was removed) change nothing.
A later `ProviderRegistered` of the name brings it back, judged afresh from `unknown`.

A paused provider (`ProviderPaused`) is `paused` until `ProviderResumed`, which judges it
afresh from `unknown`; probes folded meanwhile change nothing, and it counts in no
summary but its own. Each provider keeps where it comes from (`source`) and the position
of its last configuration event (`config_position`: its version, the ETag of its view).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import msgspec

from cryptomon.events.types import (
    Event,
    MaintenanceWindowScheduled,
    MonitoringChanged,
    ObservedValue,
    ProbeOutcome,
    ProbeRecorded,
    ProviderPaused,
    ProviderRegistered,
    ProviderRemoved,
    ProviderResumed,
    ProviderSource,
    RateLimitChanged,
    RegionLost,
)
from cryptomon.isotime import iso_time
from cryptomon.projections.base import Handler, Projection
from cryptomon.projections.maintenance import MaintenanceProjection, occurrence
from cryptomon.projections.notices import (
    PROVIDER_STATUSES,
    Judged,
    MaintenanceChanged,
    Notice,
    ProviderStatus,
    ProviderStatusChanged,
)

UNKNOWN_CATEGORY = "unknown"


class Counts(Protocol):
    """What a health probe's judgement counts: a provider's own, or one region's."""

    probe_status: ProviderStatus
    consecutive_failures: int
    consecutive_successes: int
    recent: list[ProbeOutcome]
    recent_failures: int


class RegionView(msgspec.Struct, gc=False, kw_only=True):
    """A provider as one region's probes judge it (the rules at the top, in that region)."""

    probe_status: ProviderStatus = "unknown"
    details: str = ""  # why it has that status there
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    recent: list[ProbeOutcome] = []
    recent_failures: int = 0
    last_probe_at: float | None = None
    last_status_change: float | None = None
    lost_at: float | None = None  # the region stopped reporting (`RegionLost`), until a probe


class ProviderState(msgspec.Struct, gc=False, kw_only=True):
    name: str
    category: str
    base_url: str  # as configured; keys never travel in URLs we record
    degraded_latency_ms: int | None = None
    key_configured: bool = True
    status: ProviderStatus = "unknown"
    probe_status: ProviderStatus = "unknown"  # the status before judgements (see `judge`)
    # The judgements against its chain or pair that hold: judgement -> details.
    judged: dict[str, str] = {}
    judged_in: dict[str, str] = {}  # judgement -> the group it was judged in
    # The maintenance window its last health probe fell in (id and name), if any.
    window: str | None = None
    window_name: str | None = None
    window_ends_at: float | None = None
    # The occurrence (window id, end) its probes from regions last left, if any.
    window_left: tuple[str, float | None] | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    # The probe events themselves: any kind, and the last that did not succeed.
    last_probe: ProbeRecorded | None = None
    last_error: ProbeRecorded | None = None
    last_status_change: float | None = None
    recent: list[ProbeOutcome] = []  # outcomes of the last health probes, oldest first
    recent_failures: int = 0  # failed or timed out, among `recent`
    # From the last probe over HTTPS: when its certificate expires.
    certificate_not_after: float | None = None
    observations: dict[str, Observed] = {}  # by name, the last value each probe observed
    # Removed by a `ProviderRemoved` (its recorded_at), until registered again.
    removed: bool = False
    removed_at: float | None = None
    source: ProviderSource = "file"
    definition: dict[str, Any] | None = None  # defined over the API: as it was accepted
    config_position: int = 0  # of its last configuration event
    paused_by: str | None = None  # while paused: who paused it, and when
    paused_at: float | None = None
    # By region, how that region's probes judge it; empty when no probe carried a region.
    regions: dict[str, RegionView] = {}
    # The regions its probe status comes from as it stands: those seeing it so, or not
    # online when they disagree (the reason `regional`).
    status_regions: tuple[str, ...] = ()


class Observed(msgspec.Struct, frozen=True, gc=False):
    value: ObservedValue
    at: float  # the probe's start
    endpoint: str


class ProvidersState(msgspec.Struct, gc=False):
    providers: dict[str, ProviderState] = {}
    # The thresholds judged by: the last `MonitoringChanged` folded (its defaults before one).
    thresholds: MonitoringChanged = msgspec.field(default_factory=MonitoringChanged)


class ProvidersSummary(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    total: int
    online: int
    degraded: int
    offline: int
    rate_limited: int
    maintenance: int
    unconfigured: int
    unknown: int
    paused: int
    system_health: str  # the seed's: healthy / degraded / unhealthy


_decoder = msgspec.msgpack.Decoder(ProvidersState)


class ProvidersProjection(Projection[ProvidersState]):
    name: ClassVar[str] = "providers"
    # 2: certificates, observations, maintenance; 3: judgements (probe_status, judged);
    # 4: maintenance windows (window, judged_in); 5: thresholds folded from
    # `MonitoringChanged`, no longer settings; 6: a removed provider is kept, marked
    # `removed` (removed_at), instead of dropped; 7: `source`, `config_position`, paused;
    # 8: regions
    version: ClassVar[int] = 8
    # The windows, read as each probe is folded: set by `Projections` (None: no windows).
    windows: MaintenanceProjection | None = None

    def new_state(self) -> ProvidersState:
        return ProvidersState()

    @classmethod
    def decode_state(cls, data: bytes) -> ProvidersState:
        return _decoder.decode(data)

    # ---- queries -------------------------------------------------------------

    def get(self, name: str) -> ProviderState | None:
        """The provider named, removed or not."""
        return self.state.providers.get(name)

    def all(self, *, removed: bool = False) -> list[ProviderState]:
        """Every current provider (with `removed`, the removed ones too), in the order they
        were first seen."""
        providers = self.state.providers.values()
        return list(providers) if removed else [p for p in providers if not p.removed]

    def is_removed(self, name: str) -> bool:
        provider = self.state.providers.get(name)
        return provider is not None and provider.removed

    def summary(self) -> ProvidersSummary:
        """Counts by status, and the seed's system health: healthy when at least 90% of
        the providers with a known status (not unconfigured, not yet probed, not in a
        maintenance they declared, not paused) are online, degraded from 70%. A service
        that has probed nothing yet is not unhealthy. Removed providers count in none of
        it."""
        counts = dict.fromkeys(PROVIDER_STATUSES, 0)
        total = 0
        for provider in self.state.providers.values():
            if not provider.removed:
                counts[provider.status] += 1
                total += 1
        monitored = total - sum(
            counts[status] for status in ("unconfigured", "unknown", "maintenance", "paused")
        )
        ratio = counts["online"] / monitored if monitored else 1.0
        health = "healthy" if ratio >= 0.9 else "degraded" if ratio >= 0.7 else "unhealthy"
        return ProvidersSummary(total=total, system_health=health, **counts)

    # ---- the fold ------------------------------------------------------------

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {
            ProbeRecorded: self._probe,
            RateLimitChanged: self._rate_limit,
            ProviderRegistered: self._registered,
            ProviderRemoved: self._removed,
            ProviderPaused: self._paused,
            ProviderResumed: self._resumed,
            MonitoringChanged: self._thresholds,
            RegionLost: self._region_lost,
        }

    def _region_lost(self, position: int, recorded_at: float, lost: RegionLost) -> list[Notice]:
        """The region stopped reporting: its view of every provider is unknown, and the
        others judge each provider from here on."""
        notices: list[Notice] = []
        for provider in self.state.providers.values():
            region = provider.regions.get(lost.region)
            if region is None or region.lost_at is not None:
                continue
            region.lost_at = lost.lost_at
            _count_afresh(region)
            region.probe_status = "unknown"
            region.details = f"region {lost.region} stopped reporting"
            region.last_status_change = lost.lost_at
            if provider.removed or provider.paused_at is not None or provider.window:
                continue
            if provider.status != "unconfigured":
                notices += self._overall(provider, position, lost.lost_at, None)
        return notices

    def _paused(self, position: int, recorded_at: float, pause: ProviderPaused) -> list[Notice]:
        provider = self.state.providers.get(pause.provider)
        if provider is None or provider.removed:
            return []
        provider.config_position = position
        provider.paused_by = pause.actor
        provider.paused_at = pause.paused_at
        old = provider.status
        provider.probe_status = provider.status = "paused"
        provider.last_status_change = pause.paused_at
        if old == "paused":
            return []
        details = f"paused by {pause.actor}"
        return [
            ProviderStatusChanged(position, pause.paused_at, provider.name, old, "paused", details)
        ]

    def _resumed(self, position: int, recorded_at: float, resume: ProviderResumed) -> list[Notice]:
        provider = self.state.providers.get(resume.provider)
        if provider is None or provider.removed:
            return []
        provider.config_position = position
        return self._afresh(provider, position, resume.resumed_at, f"resumed by {resume.actor}")

    def _thresholds(
        self, position: int, recorded_at: float, thresholds: MonitoringChanged
    ) -> list[Notice]:
        self.state.thresholds = thresholds
        return []

    def _removed(self, position: int, recorded_at: float, removal: ProviderRemoved) -> list[Notice]:
        provider = self.state.providers.get(removal.provider)
        if provider is not None and not provider.removed:
            provider.removed = True
            provider.removed_at = recorded_at
            provider.config_position = position
            provider.paused_by = provider.paused_at = None
        return []

    def _probe(self, position: int, recorded_at: float, probe: ProbeRecorded) -> list[Notice]:
        provider = self.state.providers.get(probe.provider)
        if provider is None:
            provider = self.state.providers[probe.provider] = ProviderState(
                name=probe.provider, category=UNKNOWN_CATEGORY, base_url=""
            )
        elif provider.removed or provider.paused_at is not None:
            return []  # in flight when it was removed or paused: it is no longer judged
        provider.last_probe = probe
        outcome = probe.outcome
        if outcome != "success":
            provider.last_error = probe
        if probe.certificate_not_after is not None:
            provider.certificate_not_after = probe.certificate_not_after
        if probe.observations:
            for name, value in probe.observations.items():
                provider.observations[name] = Observed(value, probe.started_at, probe.endpoint)
        if probe.kind != "health":
            return []
        windows = self.windows
        window = None if windows is None else windows.covering(probe.provider, probe.started_at)
        if window is not None and provider.window_left is not None:
            bounds = occurrence(window.definition, probe.started_at)
            left = (window.definition.window_id, None if bounds is None else bounds[1])
            if provider.window_left == left:
                # Its end was seen (by another region's later clock): not entered again.
                window = None
        if (window is not None or provider.window is not None) and provider.status != (
            "unconfigured"
        ):
            if window is not None:
                return self._in_window(provider, position, probe, window.definition)
            return self._after_window(provider, position, probe)
        return self._probe_judged(provider, position, probe)

    def _probe_judged(
        self, provider: ProviderState, position: int, probe: ProbeRecorded
    ) -> list[Notice]:
        """Judge a health probe (not in maintenance) by the rules at the top: the provider's
        own counts, or, for a probe with a region, that region's, then the provider from
        every region's view. Written out: this runs for nearly every event of a replay."""
        outcome = probe.outcome
        counts: Counts = provider
        if probe.region is not None:
            counts = region = self._region_view(provider, probe)
            if outcome == "maintenance":
                return self._judged_in_region(provider, region, position, probe, "maintenance")
        elif outcome == "maintenance":
            if provider.status in ("maintenance", "unconfigured"):
                if provider.status == "maintenance":
                    provider.probe_status = "maintenance"  # after a window: still in one
                return []
            provider.probe_status = "maintenance"
            return [self._change(provider, position, probe.started_at, "maintenance", probe)]
        recent = counts.recent
        recent.append(outcome)
        failed = outcome == "failed" or outcome == "timeout"
        if failed:
            counts.recent_failures += 1
        if len(recent) > self.settings.recent_window:
            dropped = recent.pop(0)
            if dropped == "failed" or dropped == "timeout":
                counts.recent_failures -= 1
        if outcome == "success":
            counts.consecutive_successes += 1
            counts.consecutive_failures = 0
        elif failed:
            counts.consecutive_failures += 1
            counts.consecutive_successes = 0
        else:
            # A 429 proves the provider answers, but it is no success either.
            counts.consecutive_failures = counts.consecutive_successes = 0

        if probe.region is not None:
            now = self._next_status(counts, provider, probe)
            return self._judged_in_region(provider, region, position, probe, now)
        if provider.status == "unconfigured":
            return []
        was = provider.probe_status
        now = provider.probe_status = self._next_status(provider, provider, probe)
        if now == was and now == provider.status and not provider.judged:
            return []  # the common case: nothing changed
        return self._show(provider, position, probe.started_at, probe, was, now)

    def _show(
        self,
        provider: ProviderState,
        position: int,
        at: float,
        probe: ProbeRecorded | None,
        was: ProviderStatus,
        now: ProviderStatus,
    ) -> list[Notice]:
        """The status change, if any, of a provider whose probe status went from `was` to
        `now` (after a probe, or a region lost: `probe` None)."""
        old = provider.status
        if now == was and not provider.judged:
            return [] if now == old else [self._change(provider, position, at, now, probe)]
        new = _shown(provider)
        # Degraded by its probes or by its judgements alone is a change too: the first
        # raises a `degraded` alert, the second resolves it.
        if new == old and (now == "online") == (was == "online"):
            return []
        return [self._change(provider, position, at, new, probe)]

    def _region_view(self, provider: ProviderState, probe: ProbeRecorded) -> RegionView:
        """The view of `provider` from the region of `probe`, reporting again."""
        assert probe.region is not None
        region = provider.regions.get(probe.region)
        if region is None:
            region = provider.regions[probe.region] = RegionView()
        region.lost_at = None
        region.last_probe_at = probe.started_at
        return region

    def _judged_in_region(
        self,
        provider: ProviderState,
        region: RegionView,
        position: int,
        probe: ProbeRecorded,
        now: ProviderStatus,
    ) -> list[Notice]:
        """`region` judged `provider` `now` from `probe`: the provider from every region's
        view."""
        if now != region.probe_status or now in ("offline", "degraded"):
            # Said again while it holds: the count of failures grows, the latency changes.
            region.details = self._details(region, provider, now, probe)
        if now != region.probe_status:
            region.probe_status = now
            region.last_status_change = probe.started_at
        if provider.status == "unconfigured":
            return []
        return self._overall(provider, position, probe.started_at, probe)

    def _overall(
        self, provider: ProviderState, position: int, at: float, probe: ProbeRecorded | None
    ) -> list[Notice]:
        """The provider's probe status from its regions' (`overall`), and its change."""
        was = provider.probe_status
        now, regions = overall(provider.regions)
        provider.probe_status = now
        moved = regions != provider.status_regions
        provider.status_regions = regions
        notices = self._show(provider, position, at, probe, was, now)
        if not notices and moved and now == was == provider.status and now != "online":
            # The same status, from other regions (degraded in a, then in b instead): said
            # again, so its alert and the feed name the regions it comes from now.
            since = provider.last_status_change  # its status did not change: nor does this
            notices = [self._change(provider, position, at, now, probe)]
            provider.last_status_change = since
        return notices

    def _in_window(
        self,
        provider: ProviderState,
        position: int,
        probe: ProbeRecorded,
        window: MaintenanceWindowScheduled,
    ) -> list[Notice]:
        """A health probe inside `window`: the provider is in maintenance, named for it."""
        at = probe.started_at
        bounds = occurrence(window, at)
        ends_at = None if bounds is None else bounds[1]
        if provider.window == window.window_id and provider.window_ends_at == ends_at:
            return []
        notices: list[Notice] = []
        if provider.window is not None and provider.window != window.window_id:
            notices.append(self._window_notice(provider, position, at, active=False))
        provider.window = window.window_id
        provider.window_name = window.name
        provider.window_ends_at = ends_at
        # Judged afresh after the window: what went before it says nothing then.
        _count_afresh(provider)
        for region in provider.regions.values():
            _count_afresh(region)
            region.probe_status = "unknown"
        notices.append(
            MaintenanceChanged(
                position,
                at,
                provider.name,
                window.window_id,
                window.name,
                True,
                None if bounds is None else bounds[0],
                ends_at,
            )
        )
        old = provider.status
        provider.probe_status = "maintenance"
        provider.status = "maintenance"
        provider.last_status_change = at
        until = f" until {iso_time(ends_at)}" if ends_at is not None else ""
        details = f"maintenance window {window.name!r} ({window.window_id}){until}"
        if old != "maintenance":
            notices.append(
                ProviderStatusChanged(position, at, provider.name, old, "maintenance", details)
            )
        return notices

    def _after_window(
        self, provider: ProviderState, position: int, probe: ProbeRecorded
    ) -> list[Notice]:
        """The first health probe after a window: judged as if it were the first ever, then
        the judgements that still hold are announced again, to raise their alerts."""
        notices: list[Notice] = [
            self._window_notice(provider, position, probe.started_at, active=False)
        ]
        if probe.region is not None:
            # Probes from regions whose clocks lag may still fall inside the occurrence.
            provider.window_left = (provider.window or "", provider.window_ends_at)
        provider.window = provider.window_name = provider.window_ends_at = None
        provider.probe_status = "unknown"
        notices += self._probe_judged(provider, position, probe)
        notices += [
            Judged(
                position,
                probe.started_at,
                provider.name,
                provider.judged_in.get(judgement, ""),
                judgement,  # type: ignore[arg-type]
                True,
                details,
            )
            for judgement, details in provider.judged.items()
        ]
        return notices

    def _window_notice(
        self, provider: ProviderState, position: int, at: float, *, active: bool
    ) -> MaintenanceChanged:
        return MaintenanceChanged(
            position,
            at,
            provider.name,
            provider.window or "",
            provider.window_name or "",
            active,
            None,
            provider.window_ends_at,
        )

    def in_window(self, name: str) -> bool:
        """Whether the provider's last health probe fell inside a maintenance window."""
        provider = self.state.providers.get(name)
        return provider is not None and provider.window is not None

    def judge(self, judged: Judged) -> list[Notice]:
        """Follow a judgement against the provider's chain or pair: while one holds, an
        `online` provider shows as `degraded`, with it as the reason."""
        provider = self.state.providers.get(judged.provider)
        if provider is None or (provider.removed and judged.active):
            return []
        if judged.active:
            provider.judged[judged.judgement] = judged.details
            provider.judged_in[judged.judgement] = judged.group
        else:
            provider.judged.pop(judged.judgement, None)
            provider.judged_in.pop(judged.judgement, None)
        new = _shown(provider)
        if new == provider.status:
            return []
        old = provider.status
        provider.status = new
        provider.last_status_change = judged.at
        details = (
            f"{judged.judgement.replace('_', ' ')}: {judged.details}"
            if judged.active
            else f"no longer {judged.judgement.replace('_', ' ')}: {judged.details}"
        )
        return [
            ProviderStatusChanged(
                judged.position,
                judged.at,
                provider.name,
                old,
                new,
                details,
                judged=new == "degraded",
            )
        ]

    def _next_status(
        self, counts: Counts, provider: ProviderState, probe: ProbeRecorded
    ) -> ProviderStatus:
        """The status after a health probe of `provider` (`counts` already updated: its
        own, or its region's). A recovery from offline also clears the outage's failures
        from the recent window."""
        outcome = probe.outcome
        if outcome == "rate_limited":
            return "rate_limited"
        thresholds = self.state.thresholds
        if counts.consecutive_failures >= thresholds.offline_after_failures:
            return "offline"
        if counts.probe_status == "offline":
            successes = counts.consecutive_successes
            if successes < thresholds.online_after_successes:
                return "offline"
            del counts.recent[:-successes]
            counts.recent_failures = 0
        if outcome == "success":
            # `_slow`, written out: this runs for nearly every event of a replay.
            limit = provider.degraded_latency_ms
            latency = probe.latency_ms
            if limit is not None and latency is not None and latency > limit:
                return "degraded"
        if not counts.recent_failures:
            return "online"
        if len(counts.recent) < self._min_probes():
            # Too few probes for a ratio: the failures change nothing yet.
            held = counts.probe_status
            return held if held == "online" or held == "degraded" else "unknown"
        return "degraded"

    def _min_probes(self) -> int:
        """Health probes the recent window needs before its failures degrade a provider:
        one by the thresholds recorded before `failure_ratio_min_probes` was."""
        recorded = self.state.thresholds.failure_ratio_min_probes
        return 1 if recorded is None else min(recorded, self.settings.recent_window)

    def _rate_limit(
        self, position: int, recorded_at: float, change: RateLimitChanged
    ) -> list[Notice]:
        provider = self.state.providers.get(change.provider)
        blocked = change.blocked_until is not None and change.blocked_until > change.observed_at
        if provider is None or not blocked or provider.status == "unconfigured":
            return []
        if provider.status == "rate_limited" and change.region is None:
            return []
        if provider.removed or provider.paused_at is not None:
            return []
        if provider.window is not None:
            return []  # in a maintenance window: its end judges the provider afresh
        if change.region is not None:
            # Its region's share is blocked: that region sees it rate limited.
            region = provider.regions.get(change.region)
            if region is None:
                region = provider.regions[change.region] = RegionView()
            if region.probe_status != "rate_limited":
                region.probe_status = "rate_limited"
                region.details = self._details(region, provider, "rate_limited", change)
                region.last_status_change = change.observed_at
            return self._overall(provider, position, change.observed_at, None)
        provider.probe_status = "rate_limited"
        return [self._change(provider, position, change.observed_at, "rate_limited", change)]

    def _registered(
        self, position: int, recorded_at: float, config: ProviderRegistered
    ) -> list[Notice]:
        provider = self.state.providers.get(config.provider)
        notices: list[Notice] = []
        if provider is None:
            provider = self.state.providers[config.provider] = ProviderState(
                name=config.provider, category=config.category, base_url=config.base_url
            )
        elif provider.removed:
            notices += self._afresh(provider, position, recorded_at, "registered again")
        provider.config_position = position
        provider.source = config.source
        provider.definition = config.definition
        provider.category = config.category
        provider.base_url = config.base_url
        provider.degraded_latency_ms = config.degraded_latency_ms
        provider.key_configured = config.key_configured
        narrowed = [r for r in provider.regions if config.regions and r not in config.regions]
        for region in narrowed:
            del provider.regions[region]  # no longer probed there: it judges it no more
        if provider.paused_at is not None:
            return notices  # its key is judged when it is resumed
        if narrowed and provider.status != "unconfigured" and provider.window is None:
            notices += self._overall(provider, position, recorded_at, None)
        if not config.key_configured and provider.status != "unconfigured":
            new: ProviderStatus = "unconfigured"
        elif config.key_configured and provider.status == "unconfigured":
            new = "unknown"  # until its next health probe
        else:
            return notices
        provider.probe_status = new
        return [*notices, self._change(provider, position, recorded_at, new, config)]

    def _afresh(
        self, provider: ProviderState, position: int, at: float, details: str
    ) -> list[Notice]:
        """A removed provider registered again, or a paused one resumed: judged afresh, as
        a new one would be (`unconfigured` without its key), its last probes and
        observations kept."""
        provider.removed = False
        provider.removed_at = None
        provider.paused_by = provider.paused_at = None
        _count_afresh(provider)
        provider.regions = {}
        provider.status_regions = ()
        provider.judged.clear()
        provider.judged_in.clear()
        provider.window = provider.window_name = provider.window_ends_at = None
        old = provider.status
        new: ProviderStatus = "unknown" if provider.key_configured else "unconfigured"
        provider.probe_status = provider.status = new
        if old == new:
            return []
        provider.last_status_change = at
        return [ProviderStatusChanged(position, at, provider.name, old, new, details)]

    def _change(
        self,
        provider: ProviderState,
        position: int,
        at: float,
        new: ProviderStatus,
        cause: ProbeRecorded | RateLimitChanged | ProviderRegistered | None,
    ) -> ProviderStatusChanged:
        old = provider.status
        provider.status = new
        provider.last_status_change = at
        if _judged_alone(provider):
            details = "; ".join(
                f"{judgement.replace('_', ' ')}: {said}"
                for judgement, said in provider.judged.items()
            )
            return ProviderStatusChanged(position, at, provider.name, old, new, details, True)
        if cause is None or (isinstance(cause, ProbeRecorded) and cause.region is not None):
            # Judged from its regions: each region's reason, named.
            regions = provider.status_regions
            return ProviderStatusChanged(
                position, at, provider.name, old, new, _regional_details(provider), regions=regions
            )
        return ProviderStatusChanged(
            position, at, provider.name, old, new, self._details(provider, provider, new, cause)
        )

    def _details(
        self,
        counts: Counts,
        provider: ProviderState,
        new: ProviderStatus,
        cause: ProbeRecorded | RateLimitChanged | ProviderRegistered,
    ) -> str:
        if isinstance(cause, RateLimitChanged):
            until = cause.blocked_until
            return f"rate limited until {iso_time(until)}" if until else "rate limited"
        if isinstance(cause, ProviderRegistered):
            return "no API key configured" if new == "unconfigured" else "API key configured"
        if new == "rate_limited":
            return f"{cause.endpoint} answered HTTP 429"
        if new == "maintenance":
            said = cause.condition
            return f"{cause.endpoint} declares maintenance" + (
                f": {said.condition} (saw {said.seen})" if said else ""
            )
        if new == "offline":
            last = (
                f"{cause.error_kind}: {cause.error_message}" if cause.error_kind else cause.outcome
            )
            return f"{counts.consecutive_failures} consecutive failures, last {last}"
        if new == "degraded" and cause.outcome == "success" and _slow(provider, cause):
            return f"latency {cause.latency_ms:.0f} ms over {provider.degraded_latency_ms} ms"
        if new == "degraded":
            return f"{counts.recent_failures} of the last {len(counts.recent)} probes failed"
        if new == "unknown" and counts.recent_failures:
            return (
                f"{counts.recent_failures} of the last {len(counts.recent)} probes failed;"
                f" judged from {self._min_probes()} probes"
            )
        successes = counts.consecutive_successes
        return f"{successes} consecutive successes" if successes > 1 else "probe succeeded"


def overall(regions: dict[str, RegionView]) -> tuple[ProviderStatus, tuple[str, ...]]:
    """A provider's status from its regions' (the README's table), and the regions it
    comes from. Regions whose state is unknown do not count; with none left it is
    `unknown`. The reporting regions all agreeing give their status, from all of them;
    any disagreement gives `degraded` (the reason `regional`), from the regions that do
    not see it online."""
    reporting = sorted(
        (name, view.probe_status)
        for name, view in regions.items()
        if view.probe_status != "unknown"
    )
    if not reporting:
        return "unknown", ()
    first = reporting[0][1]
    if all(status == first for _name, status in reporting):
        return first, tuple(name for name, _status in reporting)
    return "degraded", tuple(name for name, status in reporting if status != "online")


def _regional_details(provider: ProviderState) -> str:
    """Why a provider judged from its regions has its status: each reporting region's
    status and reason (`regional:` first when they disagree), and the unknown ones."""
    reporting = [
        (name, view) for name, view in sorted(provider.regions.items())
        if view.probe_status != "unknown"
    ]  # fmt: skip
    said = "; ".join(f"{name} {view.probe_status}: {view.details}" for name, view in reporting)
    agree = len({view.probe_status for _name, view in reporting}) <= 1
    unknown = [
        name for name, view in sorted(provider.regions.items()) if view.probe_status == "unknown"
    ]
    rest = f" (unknown in {', '.join(unknown)})" if unknown else ""
    if not reporting:
        return f"no region reporting{rest}"
    return ("" if agree else "regional: ") + said + rest


def _count_afresh(counts: Counts) -> None:
    counts.consecutive_failures = counts.consecutive_successes = 0
    counts.recent.clear()
    counts.recent_failures = 0


def _shown(provider: ProviderState) -> ProviderStatus:
    """The status shown: the probes' own, made `degraded` from `online` by a judgement."""
    status = provider.probe_status
    return "degraded" if status == "online" and provider.judged else status


def _judged_alone(provider: ProviderState) -> bool:
    """Degraded by its judgements while its probes alone say online."""
    return provider.status == "degraded" and provider.probe_status == "online"


def _slow(provider: ProviderState, probe: ProbeRecorded) -> bool:
    limit = provider.degraded_latency_ms
    latency = probe.latency_ms
    return limit is not None and latency is not None and latency > limit
