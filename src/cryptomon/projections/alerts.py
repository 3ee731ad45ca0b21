"""Alerts: raised by the fold, resolved by the fold, acknowledged by people.

Five conditions raise an alert, at most one open per provider and kind:

- `offline` (critical) and `degraded` (warning) follow the provider's status,
  which the providers projection decides: the aggregate hands each
  `ProviderStatusChanged` to `observe_status`. Each resolves when the status
  becomes anything else.
- `rate_limit`: usage at `rate_limit_warning` percent (warning) or at
  `rate_limit_critical` percent or blocked (critical). A warning that reaches
  critical is upgraded in place; it resolves when usage falls under the warning
  and no block holds (a probe started after the block's end shows it is over).
- `failure_rate`: over the last `failure_rate_window_seconds` of probes (health
  and collection), more than `failure_rate_threshold` of at least
  `failure_ratio_min_probes` (the last `MonitoringChanged` folded sets it; 10 before
  one that set it) did not succeed. It resolves when the rate is back at or under the
  threshold. A probe in a maintenance the provider declared counts neither way, so the
  end of a maintenance does not fire a burst.
- During a maintenance window that covers the provider (maintenance.py) no alert is
  raised: its probes feed neither the failure rate nor the certificate check, a rate
  limit raises nothing, and the status and judgement alerts wait for the providers fold,
  which judges the provider afresh after the window.
- `region_lost` (critical), the service's own (no provider): a region stopped reporting
  (`RegionLost`); it resolves when an instance of the region joins again (`RegionJoined`).
  A provider judged from its regions names them in its `offline` and `degraded` alerts.
- `certificate`: the provider's TLS certificate, as its last HTTPS probe saw it, expires
  within `certificate_warning_seconds` (warning) or `certificate_critical_seconds`
  (critical) of that probe's start, as the last `MonitoringChanged` folded set them. It
  resolves when a probe sees a renewed one.

The fold numbers alerts 1, 2, 3... in the order it raises them (a number is
never reused, pruning or not), so a replay of the same log gives every alert the
same id, and any number of alerts can be raised by one event. An alert is also
named by what raised it: the event's position, the provider and the kind, which
no two alerts share. An `AlertAcknowledged` names it both ways and the fold
matches the name, not the number (see `AlertAcknowledged`): a rebuild under
changed rules may number alerts otherwise, and an acknowledgement must then
still find its own alert, or none. The acknowledgements of schema 1 name the
position and kind only, which was enough then. Resolved alerts are dropped
`alert_retention_seconds` after they resolved, by event time, when a new alert
is raised (the only time their number grows).
"""

from __future__ import annotations

import heapq
import math
from typing import ClassVar

import msgspec

from cryptomon.events.types import (
    AlertAcknowledged,
    Event,
    MonitoringChanged,
    ProbeRecorded,
    ProviderPaused,
    ProviderRegistered,
    ProviderRemoved,
    ProviderResumed,
    RateLimitChanged,
    RegionJoined,
    RegionLost,
)
from cryptomon.isotime import iso_time
from cryptomon.projections.base import REGION_SEPARATOR, Handler, Projection, regional
from cryptomon.projections.maintenance import MaintenanceProjection
from cryptomon.projections.notices import (
    Alert,
    AlertAcked,
    AlertKind,
    AlertRaised,
    AlertResolved,
    Judged,
    Notice,
    ProviderStatusChanged,
    Severity,
)

_HOUR = 3600
# What the failure rate needed before `MonitoringChanged` recorded `failure_ratio_min_probes`
# (then a setting): a log recorded before judges by it still.
LEGACY_FAILURE_RATE_MIN_PROBES = 10
_STATUS_KINDS: tuple[AlertKind, ...] = ("offline", "degraded")
# How an alert's message says each judgement: "Node is lagging (chain:ethereum): ...".
_JUDGED_AS: dict[str, str] = {
    "lagging": "lagging",
    "stale": "stale",
    "wrong_chain": "on the wrong chain",
    "deviation": "deviating",
    "quote_stale": "quoting stale data",
}


class AcknowledgeError(ValueError):
    """Why an alert cannot be acknowledged; checked before an `AlertAcknowledged` is appended."""

    def __init__(self, alert_id: int, message: str) -> None:
        super().__init__(message)
        self.alert_id = alert_id


class UnknownAlertError(AcknowledgeError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(alert_id, f"there is no alert with id {alert_id}")


class AlreadyAcknowledgedError(AcknowledgeError):
    def __init__(self, alert: Alert) -> None:
        by = f" by {alert.acknowledged_by}" if alert.acknowledged_by else ""
        when = f" at {iso_time(alert.acknowledged_at)}" if alert.acknowledged_at else ""
        super().__init__(alert.id, f"alert {alert.id} was already acknowledged{by}{when}")


class FailureWindow(msgspec.Struct, gc=False):
    """Start times of one provider's probes within the failure-rate window, oldest first:
    all of them, and those that did not succeed."""

    probes: list[float] = []
    failures: list[float] = []


class AlertsState(msgspec.Struct, gc=False):
    alerts: dict[int, Alert] = {}  # by id, in the order raised
    # provider -> kind -> id of its open alert; the service's own under `_service_key`.
    open: dict[str, dict[str, int]] = {}
    windows: dict[str, FailureWindow] = {}
    # Providers whose open rate-limit alert stands only on a block (usage was under the
    # warning): when the block ends. No event marks its end, so their next probe started
    # after it does.
    block_ends: dict[str, float] = {}
    newest_hour: int = 0  # of the newest alert raised, in hours since the epoch
    # (resolved_at, id) of every resolved alert still kept, a heap (heapq): pruning takes
    # the oldest off its top instead of scanning every alert kept (tens of thousands over
    # the retention), once an hour.
    resolved: list[tuple[float, int]] = []
    next_id: int = 1  # of the next alert raised: the fold numbers them in order, from 1
    # position -> ids of the alerts kept that the event at that position raised, for an
    # acknowledgement to find its alert by name (see `AlertAcknowledged`).
    raised_by: dict[int, list[int]] = {}
    # The certificate and failure-rate thresholds: the last `MonitoringChanged` folded (its
    # defaults before).
    thresholds: MonitoringChanged = msgspec.field(default_factory=MonitoringChanged)
    # Paused providers: probes folded while paused (another instance's, in flight) judge
    # nothing until `ProviderResumed`.
    paused: list[str] = []
    # provider -> region -> its last usage report, for a key spent from several regions:
    # the rate-limit alert judges the region nearest its share's end.
    region_usage: dict[str, dict[str, RateLimitChanged]] = {}


_decoder = msgspec.msgpack.Decoder(AlertsState)


def _snapshot(alert: Alert) -> Alert:
    """A copy for a notice: the live alert keeps changing after the notice is sent."""
    return msgspec.structs.replace(alert)


class AlertsProjection(Projection[AlertsState]):
    name: ClassVar[str] = "alerts"
    # 2: the `resolved` heap; 3: certificate alerts; 4: ids numbered by the fold, `raised_by`;
    # 5: certificate thresholds folded from `MonitoringChanged`, no longer settings;
    # 6: regions, the service's own alerts
    version: ClassVar[int] = 6
    # The windows, read as each probe is folded: set by `Projections` (None: no windows).
    windows: MaintenanceProjection | None = None

    def new_state(self) -> AlertsState:
        return AlertsState()

    @classmethod
    def decode_state(cls, data: bytes) -> AlertsState:
        return _decoder.decode(data)

    # ---- queries -------------------------------------------------------------

    def get(self, alert_id: int) -> Alert | None:
        return self.state.alerts.get(alert_id)

    def lost_regions(self) -> list[str]:
        """The regions whose `region_lost` alert is open (stopped reporting, not joined
        again), sorted."""
        prefix = _service_key("")
        return sorted(
            key[len(prefix) :]
            for key, kinds in self.state.open.items()
            if key.startswith(prefix) and "region_lost" in kinds
        )

    def check_acknowledge(self, alert_id: int) -> None:
        """Raise `UnknownAlertError` or `AlreadyAcknowledgedError` unless acknowledging
        `alert_id` would change something; call before appending `AlertAcknowledged`."""
        alert = self.state.alerts.get(alert_id)
        if alert is None:
            raise UnknownAlertError(alert_id)
        if alert.acknowledged:
            raise AlreadyAcknowledgedError(alert)

    def acknowledgement(
        self, alert_id: int, actor: str, at: float, note: str | None = None
    ) -> tuple[str, AlertAcknowledged]:
        """The stream to append to, at version 0, and the event acknowledging `alert_id`;
        `check_acknowledge` first. The stream is named for the alert, not its number: two
        acknowledgements of one alert conflict, and no alert numbered before (schema-1
        acknowledgements appended to `alert:<old id>`) or under other rules shares it."""
        alert = self.state.alerts.get(alert_id)
        if alert is None:
            raise UnknownAlertError(alert_id)
        event = AlertAcknowledged(
            alert_id,
            actor,
            at,
            note,
            raised_position=alert.position,
            provider=alert.provider,
            kind=alert.kind,
        )
        return f"alert:{alert.position}:{alert.kind}:{alert.provider or ''}", event

    def query(
        self,
        *,
        acknowledged: bool | None = None,
        since: float | None = None,
        provider: str | None = None,
        severity: Severity | None = None,
        open_only: bool = False,
        limit: int | None = None,
    ) -> list[Alert]:
        """Alerts matching every filter given, newest first; `since` bounds `raised_at`.
        The alerts returned are the live ones: read them, do not change them."""
        found: list[Alert] = []
        for alert in reversed(self.state.alerts.values()):
            if since is not None and alert.raised_at < since:
                continue
            if (
                (acknowledged is not None and alert.acknowledged != acknowledged)
                or (provider is not None and alert.provider != provider)
                or (severity is not None and alert.severity != severity)
                or (open_only and alert.resolved_at is not None)
            ):
                continue
            found.append(alert)
            if limit is not None and len(found) >= limit:
                break
        return found

    # ---- the fold ------------------------------------------------------------

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {
            ProbeRecorded: self._probe,
            RateLimitChanged: self._rate_limit,
            AlertAcknowledged: self._acknowledge,
            ProviderRemoved: self._stopped,
            ProviderPaused: self._stopped,
            ProviderResumed: self._resumed,
            MonitoringChanged: self._thresholds,
            RegionLost: self._region_lost,
            RegionJoined: self._region_joined,
            ProviderRegistered: self._registered,
        }

    def _registered(
        self, position: int, recorded_at: float, config: ProviderRegistered
    ) -> list[Notice]:
        """Probed from fewer regions now: those left out judge it no more."""
        if not config.regions:
            return []
        own = config.provider + REGION_SEPARATOR
        known = {key[len(own) :] for key in self.state.windows if key.startswith(own)}
        known |= set(self.state.region_usage.get(config.provider, {}))
        notices: list[Notice] = []
        for region in sorted(known - set(config.regions)):
            notices += self._forget_region(position, recorded_at, region, config.provider)
        return notices

    def _region_lost(self, position: int, recorded_at: float, lost: RegionLost) -> list[Notice]:
        notices = self._forget_region(position, lost.lost_at, lost.region)
        key = _service_key(lost.region)
        if "region_lost" in self.state.open.get(key, {}):
            return notices
        message = (
            f"region {lost.region} stopped reporting (seen by {lost.instance}): its probes"
            " are not counted until an instance of it joins again"
        )
        alert = self._raise(
            position, lost.lost_at, None, "region_lost", "critical", message, (lost.region,)
        )
        return [*notices, alert]

    def _forget_region(
        self, position: int, at: float, region: str, only: str | None = None
    ) -> list[Notice]:
        """A region stopped reporting (or, `only`, probing that provider): its failure
        windows and usage reports count no more, and the failure-rate alerts it alone kept
        open resolve."""
        suffix = REGION_SEPARATOR + region
        windows = self.state.windows
        for key in [key for key in windows if key.endswith(suffix)]:
            if only is None or key == only + suffix:
                del windows[key]
        for provider, usage in self.state.region_usage.items():
            if only is None or provider == only:
                usage.pop(region, None)
        notices: list[Notice] = []
        for provider, opened in list(self.state.open.items()):
            if only is not None and provider != only:
                continue
            alert_id = opened.get("failure_rate")
            if alert_id is None:
                continue
            alert = self.state.alerts[alert_id]
            if region in alert.regions:
                alert.regions = tuple(r for r in alert.regions if r != region)
                if not alert.regions:
                    notices.append(self._resolve(position, at, provider, "failure_rate"))
        return notices

    def _region_joined(
        self, position: int, recorded_at: float, joined: RegionJoined
    ) -> list[Notice]:
        key = _service_key(joined.region)
        if "region_lost" not in self.state.open.get(key, {}):
            return []
        return [self._resolve(position, joined.joined_at, key, "region_lost")]

    def _thresholds(
        self, position: int, recorded_at: float, thresholds: MonitoringChanged
    ) -> list[Notice]:
        self.state.thresholds = thresholds
        return []

    def observe_status(self, change: ProviderStatusChanged) -> list[Notice]:
        """Follow a provider's status: raise `offline` / `degraded`, resolve them after."""
        notices: list[Notice] = []
        opened = self.state.open.get(change.provider, {})
        new = change.new_status
        for kind in _STATUS_KINDS:
            # Degraded by a judgement alone: its own kind of alert says so (observe_judged).
            if (change.judged or new != kind) and kind in opened:
                notices.append(self._resolve(change.position, change.at, change.provider, kind))
        if change.judged:
            return notices
        if new in opened and change.regions:
            # Judged from regions: the alert names the regions its status comes from now.
            self.state.alerts[opened[new]].regions = change.regions
        if (new == "offline" or new == "degraded") and new not in opened:
            severity: Severity = "critical" if new == "offline" else "warning"
            message = f"{change.provider} is {new}: {change.details}"
            notices.append(
                self._raise(
                    change.position,
                    change.at,
                    change.provider,
                    new,
                    severity,
                    message,
                    change.regions,
                )
            )
        return notices

    def observe_judged(self, judged: Judged) -> list[Notice]:
        """Follow a judgement against a chain or pair: raise its alert while it holds (a
        wrong chain is critical, the rest warnings), resolve it when it ends."""
        opened = self.state.open.get(judged.provider, {})
        kind = judged.judgement
        if not judged.active:
            if kind not in opened:
                return []
            return [self._resolve(judged.position, judged.at, judged.provider, kind)]
        if kind in opened:
            return []
        severity: Severity = "critical" if kind == "wrong_chain" else "warning"
        message = f"{judged.provider} is {_JUDGED_AS[kind]} ({judged.group}): {judged.details}"
        return [self._raise(judged.position, judged.at, judged.provider, kind, severity, message)]

    def _probe(self, position: int, recorded_at: float, probe: ProbeRecorded) -> list[Notice]:
        if self.state.paused and probe.provider in self.state.paused:
            return []
        notices: list[Notice] = []
        block_ends = self.state.block_ends
        if block_ends and probe.started_at >= block_ends.get(probe.provider, math.inf):
            del block_ends[probe.provider]
            notices.append(self._resolve(position, probe.started_at, probe.provider, "rate_limit"))
        windows = self.windows
        if windows is not None and windows.covering(probe.provider, probe.started_at):
            return notices  # in a maintenance window: it judges nothing
        if probe.certificate_not_after is not None:
            notices += self._certificate(position, probe, probe.certificate_not_after)
        if probe.outcome != "maintenance":
            notices += self._failure_rate(position, probe)
        return notices

    def _certificate(self, position: int, probe: ProbeRecorded, not_after: float) -> list[Notice]:
        left = not_after - probe.started_at
        settings = self.state.thresholds
        opened = self.state.open.get(probe.provider, {})
        alert_id = opened.get("certificate")
        if left >= settings.certificate_warning_seconds:
            if alert_id is None:
                return []
            return [self._resolve(position, probe.started_at, probe.provider, "certificate")]
        critical = left < settings.certificate_critical_seconds
        severity: Severity = "critical" if critical else "warning"
        days = left / 86_400
        message = f"{probe.provider}: TLS certificate expires {iso_time(not_after)}" + (
            f" ({days:.1f} days left)" if left > 0 else " (expired)"
        )
        if alert_id is None:
            return [
                self._raise(
                    position, probe.started_at, probe.provider, "certificate", severity, message
                )
            ]
        alert = self.state.alerts[alert_id]
        if severity == "critical" and alert.severity == "warning":
            alert.severity = "critical"
            alert.message = message
            return [AlertRaised(position, probe.started_at, _snapshot(alert))]
        return []

    def _failure_rate(self, position: int, probe: ProbeRecorded) -> list[Notice]:
        """The failure rate over the window; a probe with a region counts in its region's
        window (its times measure durations within that region only), and the provider's
        one alert names the regions over the threshold, resolving when none is."""
        region = probe.region
        key = probe.provider if region is None else regional(probe.provider, region)
        window = self.state.windows.get(key)
        if window is None:
            window = self.state.windows[key] = FailureWindow()
        now = probe.started_at
        probes = window.probes
        failures = window.failures
        probes.append(now)
        if probe.outcome != "success":
            failures.append(now)
        cutoff = now - self.settings.failure_rate_window_seconds
        if probes[0] <= cutoff:
            while probes[0] <= cutoff:  # stops at the latest probe, which is `now`
                del probes[0]
            while failures and failures[0] <= cutoff:
                del failures[0]

        opened = self.state.open.get(probe.provider)
        if not failures and opened is None:
            return []  # the common case: nothing failed, nothing to resolve
        threshold = self.settings.failure_rate_threshold
        high = len(failures) > threshold * len(probes)
        is_open = opened is not None and "failure_rate" in opened
        if high and not is_open and len(probes) >= self._min_probes():
            minutes = self.settings.failure_rate_window_seconds / 60
            where = "" if region is None else f" in {region}"
            message = (
                f"{probe.provider}: {len(failures)} of {len(probes)} probes failed{where} in the"
                f" last {minutes:g} min ({len(failures) / len(probes):.0%}, threshold"
                f" {threshold:.0%})"
            )
            regions = () if region is None else (region,)
            return [
                self._raise(
                    position, now, probe.provider, "failure_rate", "warning", message, regions
                )
            ]
        if not is_open or region is None:
            if is_open and not high:
                return [self._resolve(position, now, probe.provider, "failure_rate")]
            return []
        assert opened is not None
        raised = self.state.alerts[opened["failure_rate"]]
        if high and region not in raised.regions:
            raised.regions = tuple(sorted((*raised.regions, region)))
        elif not high and region in raised.regions:
            raised.regions = tuple(r for r in raised.regions if r != region)
            if not raised.regions:
                return [self._resolve(position, now, probe.provider, "failure_rate")]
        return []

    def _min_probes(self) -> int:
        """Probes the failure-rate window needs before it raises an alert."""
        recorded = self.state.thresholds.failure_ratio_min_probes
        return LEGACY_FAILURE_RATE_MIN_PROBES if recorded is None else recorded

    def _stopped(
        self, position: int, recorded_at: float, stop: ProviderRemoved | ProviderPaused
    ) -> list[Notice]:
        """Removed or paused: it is probed no more, so each of its open alerts resolves."""
        paused = self.state.paused
        if isinstance(stop, ProviderPaused):
            if stop.provider not in paused:
                paused.append(stop.provider)
        elif stop.provider in paused:
            paused.remove(stop.provider)
        windows = self.state.windows
        own = stop.provider + REGION_SEPARATOR
        for key in [k for k in windows if k == stop.provider or k.startswith(own)]:
            del windows[key]
        self.state.block_ends.pop(stop.provider, None)
        return [
            self._resolve(position, recorded_at, stop.provider, kind)
            for kind in list(self.state.open.get(stop.provider, ()))
        ]

    def _resumed(self, position: int, recorded_at: float, resume: ProviderResumed) -> list[Notice]:
        if resume.provider in self.state.paused:
            self.state.paused.remove(resume.provider)
        return []

    def _rate_limit(
        self, position: int, recorded_at: float, change: RateLimitChanged
    ) -> list[Notice]:
        if self.state.paused and change.provider in self.state.paused:
            return []
        if change.region is not None:
            change = self._nearest_limit(change)
        settings = self.settings
        blocked = change.blocked_until is not None and change.blocked_until > change.observed_at
        opened = self.state.open.get(change.provider, {})
        alert_id = opened.get("rate_limit")
        high = change.percentage >= settings.rate_limit_warning
        if blocked and not high and change.blocked_until is not None:
            self.state.block_ends[change.provider] = change.blocked_until
        else:
            self.state.block_ends.pop(change.provider, None)
        if not blocked and not high:
            if alert_id is None:
                return []
            return [self._resolve(position, change.observed_at, change.provider, "rate_limit")]
        critical = blocked or change.percentage >= settings.rate_limit_critical
        severity: Severity = "critical" if critical else "warning"
        message = (
            f"{change.provider} rate limit at {change.percentage:g}%"
            f" ({change.used} of {change.limit} per {change.window_seconds:g}s)"
        )
        if blocked and change.blocked_until is not None:
            message += f", blocked until {iso_time(change.blocked_until)}"
        if alert_id is None:
            windows = self.windows
            if windows is not None and windows.covering(change.provider, change.observed_at):
                return []  # in a maintenance window: no alert
            return [
                self._raise(
                    position, change.observed_at, change.provider, "rate_limit", severity, message
                )
            ]
        alert = self.state.alerts[alert_id]
        if critical and alert.severity == "warning":
            alert.severity = "critical"
            alert.message = message
            return [AlertRaised(position, change.observed_at, _snapshot(alert))]
        return []

    def _nearest_limit(self, change: RateLimitChanged) -> RateLimitChanged:
        """Of a provider's regions, the usage report nearest its share's end (a block still
        holding first): each region spends its own share, so one region at 90% is at 90%
        whatever the others spend."""
        assert change.region is not None
        usage = self.state.region_usage.setdefault(change.provider, {})
        usage[change.region] = change
        at = change.observed_at

        def nearness(report: RateLimitChanged) -> tuple[bool, float]:
            holding = report.blocked_until is not None and report.blocked_until > at
            return holding, report.percentage

        return max(usage.values(), key=nearness)

    def _acknowledged(self, ack: AlertAcknowledged) -> Alert | None:
        """The alert `ack` names, if it is kept: by its name when the event has one, else by
        its id (an event appended with the id alone)."""
        if ack.raised_position is None:
            return None if ack.alert_id is None else self.state.alerts.get(ack.alert_id)
        for alert_id in self.state.raised_by.get(ack.raised_position, ()):
            alert = self.state.alerts[alert_id]
            if alert.kind == ack.kind and (ack.provider is None or alert.provider == ack.provider):
                return alert
        return None

    def _acknowledge(
        self, position: int, recorded_at: float, ack: AlertAcknowledged
    ) -> list[Notice]:
        alert = self._acknowledged(ack)
        if alert is None or alert.acknowledged:
            # Validated before it was appended; the alert may since have been pruned, or the
            # rules changed and a rebuild no longer raises it.
            return []
        alert.acknowledged = True
        alert.acknowledged_by = ack.actor
        alert.acknowledged_at = ack.acknowledged_at
        alert.note = ack.note
        return [AlertAcked(position, ack.acknowledged_at, _snapshot(alert))]

    def _raise(
        self,
        position: int,
        at: float,
        provider: str | None,
        kind: AlertKind,
        severity: Severity,
        message: str,
        regions: tuple[str, ...] = (),
    ) -> AlertRaised:
        hour = int(at // _HOUR)
        if hour > self.state.newest_hour:
            # The alerts only grow here, so pruning here (at most hourly) bounds them.
            self.state.newest_hour = hour
            self._prune(hour * _HOUR - self.settings.alert_retention_seconds)
        state = self.state
        alert = Alert(
            id=state.next_id,
            position=position,
            provider=provider,
            kind=kind,
            severity=severity,
            message=message,
            raised_at=at,
            regions=regions,
        )
        state.next_id += 1
        state.alerts[alert.id] = alert
        key = provider if provider is not None else _service_key(regions[0])
        state.open.setdefault(key, {})[kind] = alert.id
        raised_by = state.raised_by.get(position)
        if raised_by is None:
            state.raised_by[position] = [alert.id]
        else:
            raised_by.append(alert.id)
        return AlertRaised(position, at, _snapshot(alert))

    def _prune(self, before: float) -> None:
        """Drop the alerts resolved before `before`."""
        alerts = self.state.alerts
        resolved = self.state.resolved
        raised_by = self.state.raised_by
        while resolved and resolved[0][0] < before:
            alert = alerts.pop(heapq.heappop(resolved)[1])
            siblings = raised_by[alert.position]
            siblings.remove(alert.id)
            if not siblings:
                del raised_by[alert.position]

    def _resolve(self, position: int, at: float, key: str, kind: str) -> AlertResolved:
        """Resolve the open alert of `kind` under `key` (its provider, or `_service_key`)."""
        opened = self.state.open[key]
        alert = self.state.alerts[opened.pop(kind)]
        if not opened:
            del self.state.open[key]
        alert.resolved_at = at
        heapq.heappush(self.state.resolved, (at, alert.id))
        return AlertResolved(position, at, _snapshot(alert))


def _service_key(region: str) -> str:
    """Where the service's own alert about `region` is kept among the providers' open
    alerts: no provider name holds a NUL (names are printable)."""
    return "\0region:" + region
