"""The live feed's messages: the seed's types and field names, plus topics.

Each message is built and encoded once (`Frame`), and the same bytes go to
every subscriber. A frame knows its topic and provider so the hub can route
it without decoding, and the position of the event it came from so a client
can resume after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from cryptomon.events.types import RecordedEvent
from cryptomon.isotime import iso_time
from cryptomon.projections import (
    AlertAcked,
    AlertRaised,
    AlertResolved,
    LogEntry,
    Notice,
    ProviderStatusChanged,
    RateLimitHigh,
)
from cryptomon.projections.notices import LOG_TYPES
from cryptomon.projections.views import AlertView

LOG_TOPICS = tuple(f"logs.{log_type}" for log_type in LOG_TYPES)
TOPICS = ("status", "providers", "alerts", "rate_limits", "events", *LOG_TOPICS)
PROVIDER_TOPIC_PREFIX = "provider:"


@dataclass(frozen=True, slots=True)
class Frame:
    position: int  # 0 for frames not from an event (status_update, ping)
    topic: str
    provider: str | None
    data: bytes
    # The whole WebSocket frame as it goes on the wire to every client: built
    # once, since server frames are neither masked nor (here) compressed.
    wire: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", text_frame(self.data))


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final, uncompressed text frame (RFC 6455 section 5.2)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    timestamp: str


class ConnectionEstablished(_Message, frozen=True, tag="connection_established"):
    client_id: str
    message: str
    position: int
    topics: list[str]
    heartbeat_interval: float


class StatusUpdate(_Message, frozen=True, tag="status_update"):
    system_metrics: dict[str, Any]
    alert_count: int
    active_websocket_clients: int
    position: int


class NewLogEntry(_Message, frozen=True, tag="new_log_entry"):
    log_type: str
    data: dict[str, Any]
    position: int


class RateLimitAlert(_Message, frozen=True, tag="rate_limit_alert"):
    provider: str
    percentage: float
    used: int
    limit: int
    severity: str
    position: int


class ProviderStatusChange(_Message, frozen=True, tag="provider_status_change"):
    provider: str
    old_status: str
    new_status: str
    details: str
    position: int


class AlertMessage(_Message, frozen=True, tag="alert"):
    # One of alert_raised, alert_acknowledged, alert_resolved (see `alert_message`).
    alert: AlertView
    position: int


class AlertRaisedMessage(AlertMessage, frozen=True, tag="alert_raised"):
    pass


class AlertAcknowledgedMessage(AlertMessage, frozen=True, tag="alert_acknowledged"):
    pass


class AlertResolvedMessage(AlertMessage, frozen=True, tag="alert_resolved"):
    pass


class EventMessage(_Message, frozen=True, tag="event"):
    position: int
    stream: str
    event_type: str
    recorded_at: str
    event: dict[str, Any]


class Ping(_Message, frozen=True, tag="ping"):
    pass


class ErrorMessage(_Message, frozen=True, tag="error"):
    message: str


class Subscribed(_Message, frozen=True, tag="subscribed"):
    topics: list[str]


class Resync(_Message, frozen=True, tag="resync"):
    """Status and alert notices between these positions are no longer kept:
    the client should refetch the REST state. Log entries and events were sent,
    except at the positions in `unsent` (first, last), which the log could not
    be read at; left out when there are none."""

    from_position: int
    to_position: int
    message: str
    unsent: list[tuple[int, int]] = []


_encoder = msgspec.json.Encoder()


def encode(message: _Message) -> bytes:
    return _encoder.encode(message)


def notice_frame(notice: Notice) -> Frame:
    at = iso_time(notice.at)
    position = notice.position
    match notice:
        case LogEntry(log_type=log_type, data=data):
            message: _Message = NewLogEntry(
                timestamp=at, log_type=log_type, data=data, position=position
            )
            return Frame(position, f"logs.{log_type}", data.get("provider"), encode(message))
        case ProviderStatusChanged():
            message = ProviderStatusChange(
                timestamp=at,
                provider=notice.provider,
                old_status=notice.old_status,
                new_status=notice.new_status,
                details=notice.details,
                position=position,
            )
            return Frame(position, "providers", notice.provider, encode(message))
        case RateLimitHigh():
            message = RateLimitAlert(
                timestamp=at,
                provider=notice.provider,
                percentage=notice.percentage,
                used=notice.used,
                limit=notice.limit,
                severity=notice.severity,
                position=position,
            )
            return Frame(position, "rate_limits", notice.provider, encode(message))
        case AlertRaised() | AlertAcked() | AlertResolved():
            kind = {
                AlertRaised: AlertRaisedMessage,
                AlertAcked: AlertAcknowledgedMessage,
                AlertResolved: AlertResolvedMessage,
            }[type(notice)]
            message = kind(timestamp=at, alert=AlertView.of(notice.alert), position=position)
            return Frame(position, "alerts", notice.alert.provider, encode(message))
    raise TypeError(f"no message for {type(notice).__name__}")


def event_frame(recorded: RecordedEvent) -> Frame:
    event = recorded.event
    message = EventMessage(
        timestamp=iso_time(recorded.recorded_at),
        position=recorded.position,
        stream=recorded.stream,
        event_type=recorded.type,
        recorded_at=iso_time(recorded.recorded_at),
        event=msgspec.to_builtins(event),
    )
    return Frame(recorded.position, "events", getattr(event, "provider", None), encode(message))


class ClientMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a client may send: subscribe, unsubscribe, resume, auth, pong."""

    type: str
    topics: list[str] | None = None
    since: int | None = None
    token: str | None = None
