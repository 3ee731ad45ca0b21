"""What folding an event can announce: the notices the live feed broadcasts.

A projection's `apply` returns notices as a side product of the fold; the live
feed sends them to clients, a replay drops them. Each carries the position of
the event that caused it and that event's time (`at`, unix seconds).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

from cryptomon.config import AlertSeverity
from cryptomon.events.types import ProbeRecorded, RateLimitChanged, RecordedEvent
from cryptomon.isotime import iso_time

ProviderStatus = Literal[
    "online",
    "degraded",
    "offline",
    "rate_limited",
    "maintenance",
    "unconfigured",
    "unknown",
    "paused",
]
PROVIDER_STATUSES: tuple[ProviderStatus, ...] = get_args(ProviderStatus)
# How a provider stands against the others of its chain or pair (see chains.py, quotes.py).
Judgement = Literal["lagging", "stale", "wrong_chain", "deviation", "quote_stale"]
JUDGEMENTS: tuple[Judgement, ...] = get_args(Judgement)
AlertKind = Literal[
    "offline",
    "degraded",
    "rate_limit",
    "failure_rate",
    "certificate",
    "lagging",
    "stale",
    "wrong_chain",
    "deviation",
    "quote_stale",
    "region_lost",
]
Severity = AlertSeverity  # what a channel filters on (config) is what alerts carry
LogType = Literal["connection", "failure", "collection", "rate_limit"]
LOG_TYPES: tuple[LogType, ...] = get_args(LogType)


class Alert(msgspec.Struct, gc=False, kw_only=True):
    """A condition worth a person's attention, from raising to resolution."""

    id: int  # numbered by the alerts fold in the order raised, from 1
    position: int  # of the event that raised it
    # Whose alert it is; None: the service's own (a region that stopped reporting).
    provider: str | None
    kind: AlertKind
    severity: Severity
    message: str
    raised_at: float
    acknowledged: bool = False
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    note: str | None = None
    resolved_at: float | None = None
    # The regions it concerns: those seeing the provider so (judged from regions), or the
    # region that stopped reporting.
    regions: tuple[str, ...] = ()


class IncidentAlert(msgspec.Struct, gc=False, kw_only=True):
    """One alert of an incident, as the incident keeps it (the alerts fold may have dropped
    the alert itself): what it was, when, and who acknowledged it."""

    id: int
    kind: AlertKind
    severity: Severity
    message: str
    raised_at: float
    position: int  # of the event that raised it
    resolved_at: float | None = None
    acknowledged: bool = False
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    note: str | None = None


class Incident(msgspec.Struct, gc=False, kw_only=True):
    """A provider's availability alerts that overlapped in time: one outage."""

    id: int  # numbered by the incidents fold in the order opened, from 1
    position: int  # of the event that opened it
    provider: str
    severity: Severity  # the worst of its alerts'
    started_at: float
    ended_at: float | None = None  # None while open
    closed_position: int | None = None  # of the event that closed it
    alerts: list[IncidentAlert] = []  # in the order they joined
    open_alerts: int = 0  # of its alerts, those not resolved yet

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; None while open."""
        return None if self.ended_at is None else self.ended_at - self.started_at


class _Notice(msgspec.Struct, frozen=True, gc=False, tag=True):
    position: int
    at: float


class ProviderStatusChanged(_Notice, frozen=True, gc=False):
    provider: str
    old_status: ProviderStatus
    new_status: ProviderStatus
    details: str
    # Degraded by a judgement against its chain or pair alone, which raises an alert of
    # its own kind: no `degraded` alert besides.
    judged: bool = False
    # Judged from its regions: those its new status comes from (see providers.overall).
    regions: tuple[str, ...] = ()


class Judged(_Notice, frozen=True, gc=False):
    """A provider entered (`active`) or left one of the states judged against the other
    providers of its chain (`group` "chain:ethereum") or pair ("pair:BTC-USD")."""

    provider: str
    group: str
    judgement: Judgement
    active: bool
    details: str


class MaintenanceChanged(_Notice, frozen=True, gc=False):
    """A provider's probe fell inside a maintenance window (`active`) or, the first after
    one, outside it: the window's id and name, and the occurrence's bounds."""

    provider: str
    window_id: str
    name: str
    active: bool
    starts_at: float | None = None
    ends_at: float | None = None


class AlertRaised(_Notice, frozen=True, gc=False):
    """A new alert, or an open one whose severity rose (same id)."""

    alert: Alert


class AlertResolved(_Notice, frozen=True, gc=False):
    alert: Alert


class AlertAcked(_Notice, frozen=True, gc=False):
    alert: Alert


class IncidentOpened(_Notice, frozen=True, gc=False):
    """A provider's first open availability alert opened an incident (`at`: its start)."""

    incident: Incident


class IncidentEscalated(_Notice, frozen=True, gc=False):
    """An open incident's severity rose: an alert more severe than any before joined it."""

    incident: Incident


class IncidentClosed(_Notice, frozen=True, gc=False):
    """An incident's last open alert resolved (`at`: its end)."""

    incident: Incident


class RateLimitHigh(_Notice, frozen=True, gc=False):
    """Usage rose to or above the warning level: the seed's `rate_limit_alert`."""

    provider: str
    percentage: float
    used: int
    limit: int
    severity: Severity


class LogEntry(_Notice, frozen=True, gc=False):
    """A new row of one of the seed's logs, with the seed's field names."""

    log_type: LogType
    data: dict[str, Any]


Notice = (
    ProviderStatusChanged
    | Judged
    | MaintenanceChanged
    | AlertRaised
    | AlertResolved
    | AlertAcked
    | IncidentOpened
    | IncidentEscalated
    | IncidentClosed
    | RateLimitHigh
    | LogEntry
)


def limit_type(window_seconds: float) -> str:
    """The seed's name for a rate-limit window: `per_minute` and the like."""
    named = {1.0: "per_second", 60.0: "per_minute", 3600.0: "per_hour", 86_400.0: "per_day"}
    return named.get(window_seconds, f"per_{window_seconds:g}s")


def log_entries(recorded: RecordedEvent) -> list[LogEntry]:
    """The log rows an event adds: a probe is a connection or collection row, plus a
    failure row when it failed; a rate-limit change is a rate_limit row."""
    event = recorded.event
    position = recorded.position
    if isinstance(event, ProbeRecorded):
        at = event.started_at
        row: dict[str, Any] = {
            "provider": event.provider,
            "endpoint": event.endpoint,
            "status": event.outcome,
            "response_time_ms": event.latency_ms,
            "http_status": event.http_status,
            "error_type": event.error_kind,
            "error_message": event.error_message,
            "timestamp": iso_time(at),
        }
        if event.region is not None:
            row["region"] = event.region  # a region-less probe's row is the seed's, as it was
        if event.kind == "health":
            entries = [LogEntry(position, at, "connection", row)]
        else:
            entries = [
                LogEntry(
                    position, at, "collection", {**row, "response_bytes": event.response_bytes}
                )
            ]
        if event.outcome != "success":
            failure = {**row, "error_type": event.error_kind or "unknown", "probe_kind": event.kind}
            entries.append(LogEntry(position, at, "failure", failure))
        return entries
    if isinstance(event, RateLimitChanged):
        at = event.observed_at
        data = {
            "provider": event.provider,
            "limit_type": limit_type(event.window_seconds),
            "limit_value": event.limit,
            "current_usage": event.used,
            "percentage": event.percentage,
            "reset_time": iso_time(event.reset_at),
            "blocked_until": iso_time(event.blocked_until),
            "reason": event.reason,
            "timestamp": iso_time(at),
        }
        return [LogEntry(position, at, "rate_limit", data)]
    return []
