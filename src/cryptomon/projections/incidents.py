"""Incidents: a provider's availability alerts that overlap in time, as one outage.

An incident opens with the first availability alert of a provider that has no open
incident (`offline`, `degraded`, `failure_rate` and the judgements `lagging`, `stale`,
`wrong_chain`, `deviation`); each such alert raised while it is open joins it; it closes
when its last open alert resolves. Certificate, rate-limit and stale-quote alerts never
join one: a certificate alert open for weeks would otherwise merge every outage of a
month into one.

The projection reads no event itself: the aggregate hands it the alert notices each event
caused (`observe`), the raises first, then the acknowledgements, then the resolutions, so
the alerts one event raises and resolves count as overlapping (a `degraded` alert that
becomes `offline` is one incident, not two). Its notices say an incident opened, rose in
severity (`IncidentEscalated`: a critical alert joined a warning incident) or closed.

Times come from the alerts, so a replay builds the same incidents; an incident never
starts before the provider's previous one ended (a probe that started earlier but was
recorded later raises its alert at its start), so a provider's incidents never overlap.
They are numbered 1, 2, 3... in the order opened, a number never reused, and each keeps a
copy of its alerts with their acknowledgements: the alerts fold drops resolved alerts
long before an incident is dropped. Closed incidents are dropped
`incident_retention_seconds` after they ended, by event time, when a new one opens (the
only time their number grows), at most once an hour.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import ClassVar

import msgspec

from cryptomon.events.types import Event
from cryptomon.projections.base import Handler, Projection
from cryptomon.projections.notices import (
    Alert,
    AlertAcked,
    AlertKind,
    AlertRaised,
    AlertResolved,
    Incident,
    IncidentAlert,
    IncidentClosed,
    IncidentEscalated,
    IncidentOpened,
    Notice,
)

# The alerts that say a provider is not available as it should be: they form incidents.
INCIDENT_KINDS: frozenset[AlertKind] = frozenset(
    ("offline", "degraded", "failure_rate", "lagging", "stale", "wrong_chain", "deviation")
)
_HOUR = 3600
_RANK = {"warning": 1, "critical": 2}


class IncidentsState(msgspec.Struct, gc=False):
    incidents: dict[int, Incident] = {}  # by id, in the order opened
    open: dict[str, int] = {}  # provider -> id of its open incident
    by_alert: dict[int, int] = {}  # alert id -> the kept incident it belongs to
    # (ended_at, id) of every closed incident kept, a heap: pruning takes the oldest first.
    ended: list[tuple[float, int]] = []
    # provider -> when its last incident ended: the next one starts no earlier.
    last_ended: dict[str, float] = {}
    newest_hour: int = 0  # of the newest incident opened, in hours since the epoch
    next_id: int = 1


_decoder = msgspec.msgpack.Decoder(IncidentsState)


def copy_incident(incident: Incident) -> Incident:
    """A copy for a notice: the live incident keeps changing after the notice is sent."""
    return msgspec.structs.replace(
        incident, alerts=[msgspec.structs.replace(alert) for alert in incident.alerts]
    )


class IncidentsProjection(Projection[IncidentsState]):
    name: ClassVar[str] = "incidents"
    version: ClassVar[int] = 1

    def new_state(self) -> IncidentsState:
        return IncidentsState()

    @classmethod
    def decode_state(cls, data: bytes) -> IncidentsState:
        return _decoder.decode(data)

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {}  # it follows the alerts' notices (`observe`), not events

    # ---- queries -------------------------------------------------------------

    def get(self, incident_id: int) -> Incident | None:
        return self.state.incidents.get(incident_id)

    def query(
        self,
        *,
        provider: str | None = None,
        open_only: bool | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[Incident]:
        """Incidents matching every filter given, newest first: `open_only` True for the
        open ones, False for the closed ones; `since` and `until` keep those that were
        open at some time between them (both included). The incidents returned are the
        live ones: read them, do not change them."""
        found: list[Incident] = []
        for incident in reversed(self.state.incidents.values()):
            ended = incident.ended_at
            if (
                (provider is not None and incident.provider != provider)
                or (open_only is not None and (ended is None) != open_only)
                or (until is not None and incident.started_at > until)
                or (since is not None and ended is not None and ended < since)
            ):
                continue
            found.append(incident)
            if limit is not None and len(found) >= limit:
                break
        return found

    # ---- the fold ------------------------------------------------------------

    def observe(self, notices: Sequence[Notice]) -> list[Notice]:
        """Follow the alert notices one event caused: open, join, escalate and close."""
        raised: list[AlertRaised] = []
        acked: list[AlertAcked] = []
        resolved: list[AlertResolved] = []
        for notice in notices:
            if isinstance(notice, AlertRaised | AlertAcked | AlertResolved):
                if notice.alert.kind not in INCIDENT_KINDS:
                    continue
                if isinstance(notice, AlertRaised):
                    raised.append(notice)
                elif isinstance(notice, AlertAcked):
                    acked.append(notice)
                else:
                    resolved.append(notice)
        if not (raised or acked or resolved):
            return []
        out: list[Notice] = []
        opened: dict[int, None] = {}  # the ids of the incidents this event opened, in order
        escalated: dict[int, AlertRaised] = {}  # incident id -> the raise that worsened it
        for notice in raised:
            incident, worse = self._raised(notice.position, notice.at, notice.alert, opened)
            if worse and incident.id not in opened:
                escalated[incident.id] = notice
        for incident_id in opened:
            incident = self.state.incidents[incident_id]
            out.append(
                IncidentOpened(incident.position, incident.started_at, copy_incident(incident))
            )
        for incident_id, cause in escalated.items():
            incident = self.state.incidents[incident_id]
            out.append(IncidentEscalated(cause.position, cause.at, copy_incident(incident)))
        for ack in acked:
            self._acknowledged(ack.alert)
        for notice in resolved:
            closed = self._resolved(notice.position, notice.at, notice.alert)
            if closed is not None and closed.ended_at is not None:
                out.append(IncidentClosed(notice.position, closed.ended_at, copy_incident(closed)))
        return out

    def _raised(
        self, position: int, at: float, alert: Alert, opened: dict[int, None]
    ) -> tuple[Incident, bool]:
        """Join `alert` to its provider's open incident, or open one with it (noted in
        `opened`); the incident, and whether its severity rose."""
        state = self.state
        incident_id = state.by_alert.get(alert.id)
        if incident_id is not None:
            # Known already: its severity rose in place (same id).
            incident = state.incidents[incident_id]
            entry = next(a for a in incident.alerts if a.id == alert.id)
            entry.severity = alert.severity
            entry.message = alert.message
            return incident, self._worsen(incident, entry)
        provider = alert.provider
        assert provider is not None  # an availability alert is a provider's
        incident_id = state.open.get(provider)
        if incident_id is None:
            incident = self._open(position, at, provider)
            opened[incident.id] = None
        else:
            incident = state.incidents[incident_id]
        entry = IncidentAlert(
            id=alert.id,
            kind=alert.kind,
            severity=alert.severity,
            message=alert.message,
            raised_at=alert.raised_at,
            position=alert.position,
        )
        incident.alerts.append(entry)
        incident.open_alerts += 1
        state.by_alert[alert.id] = incident.id
        return incident, self._worsen(incident, entry)

    def _worsen(self, incident: Incident, entry: IncidentAlert) -> bool:
        """Whether `entry` makes the incident worse: then its severity is the incident's."""
        if _RANK[entry.severity] <= _RANK[incident.severity]:
            return False
        incident.severity = entry.severity
        return True

    def _open(self, position: int, at: float, provider: str) -> Incident:
        state = self.state
        hour = int(at // _HOUR)
        if hour > state.newest_hour:
            # Incidents only grow here, so pruning here (at most hourly) bounds them.
            state.newest_hour = hour
            self._prune(hour * _HOUR - self.settings.incident_retention_seconds)
        incident = Incident(
            id=state.next_id,
            position=position,
            provider=provider,
            severity="warning",  # until its first alert joins
            started_at=max(at, state.last_ended.get(provider, at)),
        )
        state.next_id += 1
        state.incidents[incident.id] = incident
        state.open[provider] = incident.id
        return incident

    def _acknowledged(self, alert: Alert) -> None:
        incident_id = self.state.by_alert.get(alert.id)
        if incident_id is None:
            return  # pruned with its incident
        incident = self.state.incidents[incident_id]
        entry = next(a for a in incident.alerts if a.id == alert.id)
        entry.acknowledged = True
        entry.acknowledged_by = alert.acknowledged_by
        entry.acknowledged_at = alert.acknowledged_at
        entry.note = alert.note

    def _resolved(self, position: int, at: float, alert: Alert) -> Incident | None:
        """Mark `alert` resolved in its incident; the incident if that closed it."""
        state = self.state
        incident_id = state.by_alert.get(alert.id)
        if incident_id is None:
            return None
        incident = state.incidents[incident_id]
        entry = next(a for a in incident.alerts if a.id == alert.id)
        if entry.resolved_at is not None:
            return None
        entry.resolved_at = at
        incident.open_alerts -= 1
        if incident.open_alerts:
            return None
        ended = max(at, incident.started_at)
        incident.ended_at = ended
        incident.closed_position = position
        del state.open[incident.provider]
        state.last_ended[incident.provider] = ended
        heapq.heappush(state.ended, (ended, incident.id))
        return incident

    def _prune(self, before: float) -> None:
        """Drop the incidents that ended before `before`."""
        state = self.state
        ended = state.ended
        while ended and ended[0][0] < before:
            incident = state.incidents.pop(heapq.heappop(ended)[1])
            for alert in incident.alerts:
                del state.by_alert[alert.id]
