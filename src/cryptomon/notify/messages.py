"""What a notification says, and the body each kind of channel expects.

A notice (alert raised, acknowledged, resolved; incident opened, escalated, closed; rate
limit high) becomes one neutral `Notification` per channel that wants it: a channel that
groups by incident (the default) hears of an availability alert only as its incident,
one that groups by alert of each alert (and never of incidents). The outbox stores that
message (JSON, no secret in it); the channel's body is rendered from it when it
is sent: the generic webhook gets the message itself, Slack `text` and
`blocks`, Discord `content` and `embeds`, Telegram a `sendMessage` call.
Rendering is a pure function of the message and the channel, so a retry sends
the same bytes.
"""

from __future__ import annotations

import html
from typing import Any, Literal

import msgspec

from cryptomon.config import NotificationChannel, NotifyEvent
from cryptomon.isotime import iso_time
from cryptomon.projections.incidents import INCIDENT_KINDS
from cryptomon.projections.notices import (
    Alert,
    AlertAcked,
    AlertRaised,
    AlertResolved,
    Incident,
    IncidentClosed,
    IncidentEscalated,
    IncidentOpened,
    Notice,
    RateLimitHigh,
)
from cryptomon.projections.views import AlertView, IncidentView

IncidentEvent = Literal[
    "incident_opened", "incident_escalated", "incident_closed", "incident_renotify"
]
NotificationEvent = Literal[NotifyEvent, "renotify", "test", IncidentEvent]
# Which channels a notice is for: those grouping by incident, by alert, or all of them.
Audience = Literal["incident", "alert", "all"]

# Chat services cap message sizes (Discord 2000 characters of content); alert messages
# are short, but a probe's error text is whatever the provider said.
MAX_MESSAGE_CHARS = 1500


_COLORS = {"critical": 0xE01E5A, "warning": 0xECB22E, "resolved": 0x2EB67D, "info": 0x5865F2}


class AlertFields(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    kind: str
    severity: str
    message: str
    raised_at: str
    acknowledged: bool
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    note: str | None = None
    resolved_at: str | None = None
    position: int  # of the event that raised it
    regions: tuple[str, ...] = ()

    @classmethod
    def of(cls, alert: Alert) -> AlertFields:
        """The alert's view (as REST and the live feed show it), these fields of it."""
        view = AlertView.of(alert)
        return cls(**{name: getattr(view, name) for name in cls.__struct_fields__})


class RateLimitFields(msgspec.Struct, frozen=True, kw_only=True):
    percentage: float
    used: int
    limit: int


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One message to one channel: the generic webhook's JSON body as it is."""

    event: NotificationEvent
    title: str
    message: str
    severity: str | None
    provider: str | None
    category: str | None
    position: int  # of the event that caused it
    idempotency_key: str
    timestamp: str  # when it happened, by the event's own clock
    channel: str
    alert: AlertFields | None = None
    rate_limit: RateLimitFields | None = None
    incident: IncidentView | None = None
    source: str = "cryptomon"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Notification)


def encode(notification: Notification) -> bytes:
    return _encoder.encode(notification)


def decode(payload: bytes) -> Notification:
    return _decoder.decode(payload)


class Subject(msgspec.Struct, frozen=True, gc=False):
    """What a channel's filters look at, and what the idempotency key names."""

    event: NotifyEvent  # what a channel's `events` filter matches
    provider: str | None  # None: the service's own alert
    severity: str
    subject: str  # the alert's id, the incident's, or the provider for a rate-limit notice
    # The notification's own `event`, which its idempotency key names.
    sent_as: NotificationEvent
    audience: Audience = "all"


_ALERT_EVENTS: dict[type[Notice], NotifyEvent] = {
    AlertRaised: "raised",
    AlertAcked: "acknowledged",
    AlertResolved: "resolved",
}
# An incident's notice: the `events` filter it passes, and what it is sent as.
_INCIDENT_EVENTS: dict[type[Notice], tuple[NotifyEvent, IncidentEvent]] = {
    IncidentOpened: ("raised", "incident_opened"),
    IncidentEscalated: ("raised", "incident_escalated"),
    IncidentClosed: ("resolved", "incident_closed"),
}


def subject_of(notice: Notice) -> Subject | None:
    """The notification a notice is about, or None for notices nobody is told of."""
    match notice:
        case AlertRaised() | AlertAcked() | AlertResolved():
            alert = notice.alert
            event = _ALERT_EVENTS[type(notice)]
            # An availability alert is part of an incident: only channels grouping by alert
            # hear of it alone.
            audience: Audience = "alert" if alert.kind in INCIDENT_KINDS else "all"
            return Subject(event, alert.provider, alert.severity, str(alert.id), event, audience)
        case IncidentOpened() | IncidentEscalated() | IncidentClosed():
            incident = notice.incident
            event, sent_as = _INCIDENT_EVENTS[type(notice)]
            return Subject(
                event, incident.provider, incident.severity, str(incident.id), sent_as, "incident"
            )
        case RateLimitHigh():
            return Subject(
                "rate_limit", notice.provider, notice.severity, notice.provider, "rate_limit"
            )
    return None


def for_channel(channel: NotificationChannel, subject: Subject) -> bool:
    """Whether a notice of `subject` is for `channel`, by how the channel groups alerts."""
    return subject.audience == "all" or subject.audience == channel.group


def wanted(
    channel: NotificationChannel,
    event: NotifyEvent,
    severity: str,
    provider: str | None,
    category: str | None,
) -> bool:
    """Whether `channel`'s filters let this through (an empty filter lets all through).
    The service's own alerts (`provider` None) concern every provider: the provider and
    category filters let them through."""
    if event not in channel.events:
        return False
    if channel.severities and severity not in channel.severities:
        return False
    if provider is None:
        return True
    if channel.providers and provider.casefold() not in {p.casefold() for p in channel.providers}:
        return False
    return not channel.categories or category in channel.categories


def idempotency_key(channel: str, event: str, subject: str, position: int) -> str:
    """Stable across retries, restarts and replays: a receiver de-duplicates on it."""
    return f"{channel}:{event}:{subject}:{position}"


def _whose(alert: Alert) -> str:
    """Whose alert a title names: its provider, or cryptomon for the service's own."""
    return alert.provider or "cryptomon"


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def from_notice(
    channel: str, notice: Notice, subject: Subject, category: str | None
) -> Notification:
    key = idempotency_key(channel, subject.sent_as, subject.subject, notice.position)
    common: dict[str, Any] = {
        "provider": subject.provider,
        "category": category,
        "severity": subject.severity,
        "position": notice.position,
        "idempotency_key": key,
        "timestamp": iso_time(notice.at),
        "channel": channel,
    }
    if isinstance(notice, RateLimitHigh):
        return Notification(
            event="rate_limit",
            title=f"{notice.provider}: rate limit at {notice.percentage:g}%",
            message=_short(
                f"{notice.provider} has used {notice.used} of {notice.limit} requests"
                f" ({notice.percentage:g}%)"
            ),
            rate_limit=RateLimitFields(
                percentage=notice.percentage, used=notice.used, limit=notice.limit
            ),
            **common,
        )
    if isinstance(notice, IncidentOpened | IncidentEscalated | IncidentClosed):
        title, message = _incident_words(notice)
        return Notification(
            event=subject.sent_as,
            title=title,
            message=_short(message),
            incident=IncidentView.of(notice.incident),
            **common,
        )
    assert isinstance(notice, AlertRaised | AlertAcked | AlertResolved)
    alert = notice.alert
    if subject.event == "raised":
        title = f"{_whose(alert)}: {alert.kind} alert raised"
    elif subject.event == "acknowledged":
        by = f" by {alert.acknowledged_by}" if alert.acknowledged_by else ""
        title = f"{_whose(alert)}: {alert.kind} alert acknowledged{by}"
    else:
        title = f"{_whose(alert)}: {alert.kind} alert resolved"
    message = alert.message if alert.note is None else f"{alert.message}\nnote: {alert.note}"
    return Notification(
        event=subject.event,
        title=title,
        message=_short(message),
        alert=AlertFields.of(alert),
        **common,
    )


def _kinds(incident: Incident) -> str:
    return ", ".join(dict.fromkeys(alert.kind for alert in incident.alerts))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _incident_words(notice: IncidentOpened | IncidentEscalated | IncidentClosed) -> tuple[str, str]:
    """The title and message of an incident's notification."""
    incident = notice.incident
    name = f"{incident.provider}: incident {incident.id}"
    if isinstance(notice, IncidentOpened):
        lines = [alert.message for alert in incident.alerts]
        return f"{name} opened ({_kinds(incident)})", "\n".join(lines)
    if isinstance(notice, IncidentEscalated):
        worst = [a for a in incident.alerts if a.severity == incident.severity][-1]
        return f"{name} escalated to {incident.severity} ({worst.kind})", worst.message
    lasted = _minutes(incident.duration or 0.0)
    acknowledged = sorted({a.acknowledged_by for a in incident.alerts if a.acknowledged_by})
    count = len(incident.alerts)
    lines = [f"{count} alert{'s' * (count != 1)} ({_kinds(incident)}) over {lasted}"]
    if acknowledged:
        lines.append(f"acknowledged by {', '.join(acknowledged)}")
    lines += [f"{alert.kind}: {alert.message}" for alert in incident.alerts]
    return f"{name} closed after {lasted}", "\n".join(lines)


def incident_renotification(
    channel: str, incident: Incident, slot: int, category: str | None, now: float
) -> Notification:
    """A reminder of an open incident with an alert nobody acknowledged; `slot` counts
    renotify intervals since it started, so each interval has one key."""
    unacknowledged = [a for a in incident.alerts if a.resolved_at is None and not a.acknowledged]
    return Notification(
        event="incident_renotify",
        title=f"{incident.provider}: incident {incident.id} still open",
        message=_short(
            f"open for {_minutes(now - incident.started_at)}, not acknowledged: "
            + "; ".join(alert.message for alert in unacknowledged)
        ),
        severity=incident.severity,
        provider=incident.provider,
        category=category,
        position=incident.position,
        idempotency_key=f"{channel}:incident_renotify:{incident.id}:{slot}",
        timestamp=iso_time(now),
        channel=channel,
        incident=IncidentView.of(incident),
    )


def renotification(
    channel: str, alert: Alert, slot: int, category: str | None, now: float
) -> Notification:
    """A reminder of an open, unacknowledged alert; `slot` counts renotify intervals since
    it was raised, so each interval has one key."""
    minutes = (now - alert.raised_at) / 60
    return Notification(
        event="renotify",
        title=f"{_whose(alert)}: {alert.kind} alert still open",
        message=_short(f"{alert.message} (open for {minutes:.0f} min, not acknowledged)"),
        severity=alert.severity,
        provider=alert.provider,
        category=category,
        position=alert.position,
        idempotency_key=f"{channel}:renotify:{alert.id}:{slot}",
        timestamp=iso_time(now),
        channel=channel,
        alert=AlertFields.of(alert),
    )


def trial_notification(channel: str, now: float) -> Notification:
    """What `notify-test` sends: a message that says it is a test, with a fresh key."""
    return Notification(
        event="test",
        title="cryptomon test notification",
        message=f"If you can read this, channel {channel!r} works.",
        severity=None,
        provider=None,
        category=None,
        position=0,
        idempotency_key=f"{channel}:test:{now:.6f}",
        timestamp=iso_time(now),
        channel=channel,
    )


# ---- the body each kind of channel expects -------------------------------------


def _tone(note: Notification) -> str:
    if note.event in ("resolved", "incident_closed"):
        return "resolved"
    if note.event in ("acknowledged", "test"):
        return "info"
    return note.severity or "info"


def _label(note: Notification) -> str:
    if note.event in ("resolved", "incident_closed"):
        return "RESOLVED"
    return (note.severity or note.event).upper()


def _facts(note: Notification) -> list[tuple[str, str]]:
    facts = [(name, value) for name, value in (
        ("Provider", note.provider), ("Category", note.category), ("Severity", note.severity),
    ) if value]  # fmt: skip
    if note.alert is not None:
        facts.append(("Alert", f"{note.alert.id} ({note.alert.kind})"))
    if note.incident is not None:
        count = len(note.incident.alerts)
        facts.append(("Incident", f"{note.incident.id} ({count} alert{'s' * (count != 1)})"))
    return facts


def _slack_text(text: str) -> str:
    # Slack reads <...> as links and mentions: its docs ask for these three escaped.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(note: Notification) -> dict[str, Any]:
    text = _slack_text(f"[{_label(note)}] {note.title}")
    fields = [
        {"type": "mrkdwn", "text": f"*{name}*\n{_slack_text(value)}"}
        for name, value in _facts(note)
    ]
    message = _slack_text(note.message)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*\n{message}"}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _slack_text(
                        f"{note.timestamp} · position {note.position} · {note.idempotency_key}"
                    ),
                }
            ],
        }
    )
    return {"text": text, "blocks": blocks}


def _discord(note: Notification) -> dict[str, Any]:
    embed = {
        "title": note.title[:256],
        "description": note.message,
        "color": _COLORS[_tone(note)],
        "fields": [{"name": name, "value": value, "inline": True} for name, value in _facts(note)],
        "timestamp": note.timestamp,
        "footer": {"text": note.idempotency_key},
    }
    return {
        "content": f"[{_label(note)}] {note.title}",
        "embeds": [embed],
        # A provider's error text saying "@everyone" must not ping anyone.
        "allowed_mentions": {"parse": []},
    }


def _telegram(note: Notification, chat_id: int | str | None) -> dict[str, Any]:
    lines = [f"<b>[{_label(note)}] {html.escape(note.title)}</b>", html.escape(note.message)]
    lines += [f"{name}: {html.escape(value)}" for name, value in _facts(note)]
    lines.append(f"<i>{html.escape(note.timestamp)} · position {note.position}</i>")
    return {
        "chat_id": chat_id,
        "text": "\n".join(lines),
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
    }


def render(channel: NotificationChannel, note: Notification) -> bytes:
    """The request body for `channel`."""
    match channel.kind:
        case "webhook":
            return encode(note)
        case "slack":
            return _encoder.encode(_slack(note))
        case "discord":
            return _encoder.encode(_discord(note))
        case "telegram":
            return _encoder.encode(_telegram(note, channel.chat_id))
