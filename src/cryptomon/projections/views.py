"""How an alert and an incident are shown to people: one shape each for REST responses,
the live feed and notifications.

`/api/alerts` and the feed's `alert_raised`, `alert_acknowledged` and
`alert_resolved` messages carry the alert's view, with the seed's field names
(`alert_type`, `timestamp`) next to ours; a notification carries a subset of
its fields (`notify.messages.AlertFields`). `/api/incidents`, the feed's
`incident_opened`, `incident_escalated` and `incident_closed` and an incident's
notifications carry the incident's. Times are ISO 8601 with a `Z`.
"""

from __future__ import annotations

import msgspec

from cryptomon.isotime import iso_time
from cryptomon.projections.notices import Alert, AlertKind, Incident, IncidentAlert


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    provider: str | None  # None: the service's own alert (a region stopped reporting)
    kind: AlertKind
    alert_type: str
    severity: str
    message: str
    raised_at: str
    timestamp: str
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: str | None
    note: str | None
    resolved_at: str | None
    position: int
    regions: tuple[str, ...]  # the regions it concerns (judged from regions); often none

    @classmethod
    def of(cls, alert: Alert) -> AlertView:
        return cls(
            id=alert.id,
            provider=alert.provider,
            kind=alert.kind,
            alert_type=alert.kind,
            severity=alert.severity,
            message=alert.message,
            raised_at=iso_time(alert.raised_at),
            timestamp=iso_time(alert.raised_at),
            acknowledged=alert.acknowledged,
            acknowledged_by=alert.acknowledged_by,
            acknowledged_at=iso_time(alert.acknowledged_at),
            note=alert.note,
            resolved_at=iso_time(alert.resolved_at),
            position=alert.position,
            regions=alert.regions,
        )


class IncidentAlertView(msgspec.Struct, frozen=True, kw_only=True):
    """One alert of an incident, with its acknowledgement."""

    id: int
    kind: AlertKind
    severity: str
    message: str
    raised_at: str
    resolved_at: str | None
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: str | None
    note: str | None
    position: int  # of the event that raised it

    @classmethod
    def of(cls, alert: IncidentAlert) -> IncidentAlertView:
        return cls(
            id=alert.id,
            kind=alert.kind,
            severity=alert.severity,
            message=alert.message,
            raised_at=iso_time(alert.raised_at),
            resolved_at=iso_time(alert.resolved_at),
            acknowledged=alert.acknowledged,
            acknowledged_by=alert.acknowledged_by,
            acknowledged_at=iso_time(alert.acknowledged_at),
            note=alert.note,
            position=alert.position,
        )


class IncidentView(msgspec.Struct, frozen=True, kw_only=True):
    """An incident as REST, the live feed and notifications show it."""

    id: int
    provider: str
    open: bool
    severity: str  # the worst of its alerts'
    started_at: str
    ended_at: str | None  # null while open
    duration_seconds: float | None  # null while open
    alert_ids: list[int]
    alerts: list[IncidentAlertView]
    acknowledged: bool  # every one of its alerts is
    position: int  # of the event that opened it
    closed_position: int | None

    @classmethod
    def of(cls, incident: Incident) -> IncidentView:
        duration = incident.duration
        return cls(
            id=incident.id,
            provider=incident.provider,
            open=incident.ended_at is None,
            severity=incident.severity,
            started_at=iso_time(incident.started_at),
            ended_at=iso_time(incident.ended_at),
            duration_seconds=None if duration is None else round(duration, 3),
            alert_ids=[alert.id for alert in incident.alerts],
            alerts=[IncidentAlertView.of(alert) for alert in incident.alerts],
            acknowledged=all(alert.acknowledged for alert in incident.alerts),
            position=incident.position,
            closed_position=incident.closed_position,
        )
