"""How an alert is shown to people: one shape for REST responses and the live feed.

`/api/alerts` and the feed's `alert_raised`, `alert_acknowledged` and
`alert_resolved` messages carry this view, with the seed's field names
(`alert_type`, `timestamp`) next to ours; a notification carries a subset of
its fields (`notify.messages.AlertFields`). Times are ISO 8601 with a `Z`.
"""

from __future__ import annotations

import msgspec

from cryptomon.isotime import iso_time
from cryptomon.projections.notices import Alert, AlertKind


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    provider: str
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
        )
