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
    Projections,
    ProviderStatusChanged,
    RateLimitHigh,
)
from cryptomon.projections.notices import (
    LOG_TYPES,
    IncidentClosed,
    IncidentEscalated,
    IncidentOpened,
    Judged,
    Judgement,
    MaintenanceChanged,
)
from cryptomon.projections.views import AlertView, IncidentView

LOG_TOPICS = tuple(f"logs.{log_type}" for log_type in LOG_TYPES)
# What a client gets from connecting on, without subscribing: the seed's messages
# (status_update, provider_status_change with maintenance_window, rate_limit_alert,
# new_log_entry) and the alert and incident messages. Pings and replies go to everyone.
DEFAULT_TOPICS = ("status", "providers", "alerts", "rate_limits", *LOG_TOPICS)
EVENTS_TOPIC = "events"
# Only for a client that subscribes to them: every stored event as it is (an `event`,
# which repeats what the log entry and notices of that event say), judgements of
# chains' nodes (chain_state_change) and of pairs' sources (quote_deviation), and every
# move of a node's head (head_update, one per probe of a moving chain).
OPT_IN_TOPICS = (EVENTS_TOPIC, "chains", "quotes", "heads")
TOPICS = (*DEFAULT_TOPICS, *OPT_IN_TOPICS)
PROVIDER_TOPIC_PREFIX = "provider:"
# The rule, as connection_established states it to every client.
SUBSCRIBING = (
    "without a subscribe a client gets default_topics; its first subscribe (or ?topics= on"
    " connecting) replaces them, later subscribes add, and unsubscribe removes (one sent"
    " before any subscribe narrows default_topics, which later subscribes then add to);"
    " provider:<name> carries everything about one provider but its raw events, which"
    " only the events topic carries"
)


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
    topics: list[str]  # what this client gets now
    heartbeat_interval: float
    # Topics sent only to a client that subscribes to them (see OPT_IN_TOPICS).
    opt_in_topics: list[str] = []
    # What a client gets without subscribing, and how subscribing changes it.
    default_topics: list[str] = []
    subscribing: str = ""


class StatusUpdate(_Message, frozen=True, tag="status_update"):
    system_metrics: dict[str, Any]
    alert_count: int
    active_websocket_clients: int
    position: int
    # Each region probes came from: "reporting", or "lost" (it stopped reporting and no
    # instance of it joined again); left out when no probe carried a region.
    regions: dict[str, str] = {}


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
    """A provider's status changed. Judged from regions, `regions` names those its new
    status comes from (every reporting region when they agree; when they disagree, those
    not seeing it online) and `region_statuses` is each region's own status then; both are
    left out for a provider whose probes carry no region."""

    provider: str
    old_status: str
    new_status: str
    details: str
    position: int
    regions: list[str] = []
    region_statuses: dict[str, str] = {}


class ChainStateChange(_Message, frozen=True, tag="chain_state_change"):
    """A node of a chain entered (`active`) or left a state: lagging, stale, wrong_chain.
    `head`, `best_head`, `lag` and `lag_seconds` are the node's as of that event (None
    once it is no node of the chain any more)."""

    provider: str
    chain: str
    state: Judgement
    active: bool
    details: str
    position: int
    head: int | None = None
    best_head: int | None = None
    lag: int | None = None
    lag_seconds: float | None = None


class QuoteDeviation(_Message, frozen=True, tag="quote_deviation"):
    """A source of a pair entered (`active`) or left a state: deviation, quote_stale.
    `price`, `median` and `deviation_percent` are as of that event."""

    provider: str
    pair: str
    state: Judgement
    active: bool
    details: str
    position: int
    price: float | None = None
    median: float | None = None
    deviation_percent: float | None = None


class HeadUpdate(_Message, frozen=True, tag="head_update"):
    """A node's head moved (or was first seen): one per such probe. `timestamp` is the
    probe's start; `previous_head` is None for the node's first head (the hub starts from
    the heads the read models hold)."""

    provider: str
    chain: str
    head: int
    previous_head: int | None
    best_head: int | None
    lag: int | None
    position: int


class MaintenanceWindowMessage(_Message, frozen=True, tag="maintenance_window"):
    """A provider entered (`active`) or left a maintenance window (topic `providers`)."""

    provider: str
    window_id: str
    name: str
    active: bool
    position: int
    starts_at: str | None = None
    ends_at: str | None = None


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


class IncidentMessage(_Message, frozen=True, tag="incident"):
    # One of incident_opened, incident_escalated, incident_closed (topic `alerts`).
    incident: IncidentView
    position: int


class IncidentOpenedMessage(IncidentMessage, frozen=True, tag="incident_opened"):
    pass


class IncidentEscalatedMessage(IncidentMessage, frozen=True, tag="incident_escalated"):
    pass


class IncidentClosedMessage(IncidentMessage, frozen=True, tag="incident_closed"):
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


def notice_frame(notice: Notice, projections: Projections | None = None) -> Frame:
    """The frame for a notice; `projections` (as of the notice's event) add a judged
    node's or source's figures to its message."""
    at = iso_time(notice.at)
    position = notice.position
    match notice:
        case Judged():
            return judged_frame(notice, projections)
        case LogEntry(log_type=log_type, data=data):
            message: _Message = NewLogEntry(
                timestamp=at, log_type=log_type, data=data, position=position
            )
            return Frame(position, f"logs.{log_type}", data.get("provider"), encode(message))
        case ProviderStatusChanged():
            state = projections.providers.get(notice.provider) if projections is not None else None
            message = ProviderStatusChange(
                timestamp=at,
                provider=notice.provider,
                old_status=notice.old_status,
                new_status=notice.new_status,
                details=notice.details,
                position=position,
                regions=list(notice.regions),
                region_statuses=(
                    {name: view.probe_status for name, view in sorted(state.regions.items())}
                    if state is not None and state.regions
                    else {}
                ),
            )
            return Frame(position, "providers", notice.provider, encode(message))
        case MaintenanceChanged():
            message = MaintenanceWindowMessage(
                timestamp=at,
                provider=notice.provider,
                window_id=notice.window_id,
                name=notice.name,
                active=notice.active,
                position=position,
                starts_at=iso_time(notice.starts_at),
                ends_at=iso_time(notice.ends_at),
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
        case IncidentOpened() | IncidentEscalated() | IncidentClosed():
            incident_kind = {
                IncidentOpened: IncidentOpenedMessage,
                IncidentEscalated: IncidentEscalatedMessage,
                IncidentClosed: IncidentClosedMessage,
            }[type(notice)]
            message = incident_kind(
                timestamp=at, incident=IncidentView.of(notice.incident), position=position
            )
            return Frame(position, "alerts", notice.incident.provider, encode(message))
    raise TypeError(f"no message for {type(notice).__name__}")


def judged_frame(notice: Judged, projections: Projections | None) -> Frame:
    """`chain_state_change` for a judgement of a chain's node (topic `chains`),
    `quote_deviation` for one of a pair's source (topic `quotes`). The figures are those
    of the node or source in that group now; none when it has left the group."""
    kind, _, group = notice.group.partition(":")
    at = iso_time(notice.at)
    if kind == "chain":
        chain = projections.chains.get(group) if projections is not None else None
        node = chain.nodes.get(notice.provider) if chain is not None else None
        chain_message = ChainStateChange(
            timestamp=at,
            provider=notice.provider,
            chain=group,
            state=notice.judgement,
            active=notice.active,
            details=notice.details,
            position=notice.position,
            head=node.head if node is not None else None,
            best_head=chain.best if chain is not None and node is not None else None,
            lag=node.lag if node is not None else None,
            lag_seconds=node.lag_seconds if node is not None else None,
        )
        return Frame(notice.position, "chains", notice.provider, encode(chain_message))
    pair = projections.quotes.get(group) if projections is not None else None
    source = pair.sources.get(notice.provider) if pair is not None else None
    quote_message = QuoteDeviation(
        timestamp=at,
        provider=notice.provider,
        pair=group,
        state=notice.judgement,
        active=notice.active,
        details=notice.details,
        position=notice.position,
        price=source.price if source is not None else None,
        median=pair.median if pair is not None and source is not None else None,
        deviation_percent=source.deviation if source is not None else None,
    )
    return Frame(notice.position, "quotes", notice.provider, encode(quote_message))


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
    provider = getattr(event, "provider", None)
    return Frame(recorded.position, EVENTS_TOPIC, provider, encode(message))


class ClientMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a client may send: subscribe, unsubscribe, resume, auth, pong."""

    type: str
    topics: list[str] | None = None
    since: int | None = None
    token: str | None = None
