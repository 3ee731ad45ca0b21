"""The facts cryptomon records: event types, their schema versions and codec.

Every event is a frozen msgspec Struct in one tagged union (`Event`), encoded
with its `type` tag. Each type has a schema version; an event stored under an
older version is upcast on read, and the stored bytes are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import msgspec

ProbeKind = Literal["health", "collection"]
PROBE_KINDS: tuple[ProbeKind, ...] = get_args(ProbeKind)
# The seed's attempt statuses, which users' scripts filter on, and `maintenance`: the
# provider's answer said it is in maintenance (a condition in `maintenance_when` held).
ProbeOutcome = Literal["success", "failed", "timeout", "rate_limited", "maintenance"]
ErrorKind = Literal[
    "timeout",
    "dns",
    "connection_refused",
    "connection_error",
    "tls",
    "http_4xx",
    "http_5xx",
    "rate_limited",
    "invalid_body",
    "body_too_large",
    "condition",
    "rpc_error",
]
# A value a probe extracted from its answer (`observe`): hex quantities arrive as ints.
ObservedValue = int | float | str | bool


class RateLimitSpec(msgspec.Struct, frozen=True, gc=False):
    requests: int
    per_seconds: float


ProviderSource = Literal["file", "api", "catalogue"]


class ProviderRegistered(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """A provider's configuration as the service started monitoring it.

    Holds the *name* of the env var a key comes from, never the key. `source` says who
    defines it: the config file, the bundled catalogue (a file without providers), or the
    API. A provider defined over the API carries its whole `definition` (the keys of a
    `[[providers]]` table, as accepted: no secret is), so a restart or another instance
    rebuilds it from the log; the file's providers are rebuilt from the file, whose
    literal header values may be secrets and stay out of the log.
    """

    provider: str
    category: str
    base_url: str
    health_path: str
    schedule: str
    timeout_ms: int
    degraded_latency_ms: int
    rate_limit: RateLimitSpec | None = None
    api_key_env: str | None = None
    key_configured: bool = True
    collections: tuple[str, ...] = ()
    # The health probe's request and checks, as written (no header values: secrets).
    method: str = "GET"
    conditions: tuple[str, ...] = ()
    maintenance_when: tuple[str, ...] = ()
    observe: tuple[str, ...] = ()  # the names of its observations
    chain: str | None = None  # the chain whose nodes it is compared with
    quote: str | None = None  # the pair whose price it is compared with
    source: ProviderSource = "file"
    definition: dict[str, Any] | None = None  # source "api" only
    # The regions it is probed from (its config's `regions`); empty: every region.
    regions: tuple[str, ...] = ()


class ProviderRemoved(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """The provider is no longer probed; its history stays. `over_api`: deleted over the
    API, so a catalogue provider stays off across restarts (the file's are removed by
    leaving the file)."""

    provider: str
    over_api: bool = False


class ProviderPaused(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """Not probed until `ProviderResumed`: its open alerts resolve, it judges nothing."""

    provider: str
    actor: str
    paused_at: float


class ProviderResumed(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """Probed again after `ProviderPaused`, judged afresh from its next probe."""

    provider: str
    actor: str
    resumed_at: float


class ConditionSeen(msgspec.Struct, frozen=True, gc=False):
    """The condition that decided a probe (the first that failed, or the maintenance
    condition that held) and the value seen, cut short and with no secret in it."""

    condition: str
    seen: str


class ProbeRecorded(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """One request to a provider and what came of it.

    `started_at` is when the request left (unix seconds); `latency_ms` runs
    from then to the end of the body or the failure. `certificate_not_after` is when
    the peer's TLS certificate expires (a date, not the days left, so folds stay
    deterministic); `observations` are the values the probe's `observe` extracted.
    """

    provider: str
    kind: ProbeKind
    endpoint: str
    outcome: ProbeOutcome
    started_at: float
    latency_ms: float | None = None
    http_status: int | None = None
    response_bytes: int = 0
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    scheduled_at: float | None = None
    condition: ConditionSeen | None = None
    rpc_error_code: int | None = None
    certificate_not_after: float | None = None
    observations: dict[str, ObservedValue] | None = None
    # The region of the instance that probed (`[instance] region`); None: no region.
    region: str | None = None


class RateLimitChanged(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """Rate-limit usage crossed a threshold, or the provider told us its limit."""

    provider: str
    used: int
    limit: int
    window_seconds: float
    percentage: float
    observed_at: float
    reset_at: float | None = None
    reason: str = "threshold"
    blocked_until: float | None = None
    # The region whose instance counted the usage (its share of the provider's limit).
    region: str | None = None


class AlertAcknowledged(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """A person acknowledged an alert.

    `alert_id` is the id they were shown; the alerts fold numbers alerts in the order it
    raises them. `raised_position`, `provider` and `kind` name the alert itself (the event
    that raised it, whose alert, what kind): the fold finds the alert by them, so a rebuild
    under other rules, which may number the alerts otherwise, still acknowledges the same
    alert or none. A schema-1 acknowledgement named its alert by the id of that time,
    `position * 10 + slot of its kind`: upcast, that id is `legacy_alert_id`, `alert_id` is
    None (the number may be another alert's id today) and the position and kind come from
    the old id; its provider is unknown (one event judged one provider then).
    """

    alert_id: int | None
    actor: str
    acknowledged_at: float
    note: str | None = None
    raised_position: int | None = None
    provider: str | None = None
    kind: str | None = None
    legacy_alert_id: int | None = None


WindowSource = Literal["file", "api"]


class MaintenanceWindowScheduled(
    msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True
):
    """A maintenance window's whole definition, as the config file or the API gave it.

    Either recurring (`cron`, and `duration_seconds` from each time it fires) or one-off
    (`start` to `end`, unix seconds). It covers the providers it names and those of the
    categories it names. A later event with the same `window_id` replaces the definition
    (the file changed); `MaintenanceWindowCancelled` ends it."""

    window_id: str  # "file:<name>" or "api:<hex>"
    name: str
    source: WindowSource
    providers: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    cron: str | None = None
    duration_seconds: float | None = None
    start: float | None = None
    end: float | None = None


class MaintenanceWindowCancelled(
    msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True
):
    """A window ended for good: cancelled over the API, or gone from the file."""

    window_id: str
    actor: str
    cancelled_at: float


class JobTriggered(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    job_id: str
    actor: str
    triggered_at: float


class MonitoringChanged(msgspec.Struct, frozen=True, gc=False, tag=True, kw_only=True):
    """The `[monitoring]` thresholds the provider status, failure-rate and certificate
    alerts judge by, from this position on. Recorded at start-up and on reload when the
    file's differ from the last recorded (a log without one judges by these defaults), so a
    replay folds the thresholds that were served, not the ones in today's file."""

    offline_after_failures: int = 3
    online_after_successes: int = 2
    certificate_warning_seconds: float = 14 * 86_400.0
    certificate_critical_seconds: float = 3 * 86_400.0
    # Probes a failure ratio needs in its window before it judges: the status's `degraded`
    # from recent failures, and the `failure_rate` alert. Added in schema 2; None, as in
    # every event before it and in a log without one, judges by the rules of that time: a
    # failure degrades from the first probe, the failure rate needs 10.
    failure_ratio_min_probes: int | None = None


class RegionJoined(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """An instance of `region` started probing on this log: the region reports again.
    Recorded on the region's stream (`region:<name>`) by an instance of the region when
    the stream's last event is not already a `RegionJoined`."""

    region: str
    instance: str  # the instance that joined
    joined_at: float


class RegionLost(msgspec.Struct, frozen=True, gc=False, tag=True, omit_defaults=True):
    """The last instance of `region` is gone (its lease connections closed): the region
    stopped reporting, so its view of every provider is unknown from this position on. A
    dead prober is not a dead provider. Recorded once, by one surviving instance
    (`instance`), on the region's stream."""

    region: str
    instance: str  # the surviving instance that saw the region's last lease disappear
    lost_at: float


Event = (
    ProviderRegistered
    | ProviderRemoved
    | ProbeRecorded
    | RateLimitChanged
    | AlertAcknowledged
    | JobTriggered
    | MaintenanceWindowScheduled
    | MaintenanceWindowCancelled
    | MonitoringChanged
    | ProviderPaused
    | ProviderResumed
    | RegionJoined
    | RegionLost
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        ProviderRegistered,
        ProviderRemoved,
        ProbeRecorded,
        RateLimitChanged,
        AlertAcknowledged,
        JobTriggered,
        MaintenanceWindowScheduled,
        MaintenanceWindowCancelled,
        MonitoringChanged,
        ProviderPaused,
        ProviderResumed,
        RegionJoined,
        RegionLost,
    )
}


class EventMetadata(msgspec.Struct, frozen=True, gc=False):
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: its place in the log and the event itself."""

    position: int
    event_id: str
    stream: str
    version: int
    recorded_at: float
    event: Event
    metadata: EventMetadata
    hash: str

    @property
    def type(self) -> str:
        return type(self.event).__name__


class EventDecodeError(ValueError):
    """A stored payload that cannot be read as any known event."""

    def __init__(self, position: int, event_type: str, reason: str) -> None:
        super().__init__(
            f"event at position {position} (type {event_type!r}) is unreadable: {reason}"
        )
        self.position = position
        self.event_type = event_type
        self.reason = reason


# ---- upcasting ---------------------------------------------------------------

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _probe_recorded_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 used the seed's names: `response_time_ms` and `status`; v2 says
    `latency_ms` and `outcome`, and a v1 failure had no error kind."""
    upgraded = dict(payload)
    if "response_time_ms" in upgraded:
        upgraded["latency_ms"] = upgraded.pop("response_time_ms")
    if "status" in upgraded:
        upgraded["outcome"] = upgraded.pop("status")
    return upgraded


# The alert kinds of schema-1 acknowledgements, by slot: their ids were
# `position * 10 + slot`. History, never extended: later kinds never had such an id.
_V1_ALERT_SLOTS = ("offline", "degraded", "rate_limit", "failure_rate", "certificate")


def _alert_acknowledged_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1's `alert_id` was `position * 10 + slot of the alert's kind`; v2 names the alert
    by the raising position and kind (see `AlertAcknowledged`) and keeps the old id as
    `legacy_alert_id`."""
    upgraded = dict(payload)
    if "alert_id" not in upgraded:
        return upgraded  # not a valid v1 payload: it fails as one
    legacy = upgraded["alert_id"]
    upgraded["alert_id"] = None
    upgraded["legacy_alert_id"] = legacy
    if type(legacy) is int and legacy >= 0 and legacy % 10 < len(_V1_ALERT_SLOTS):
        upgraded["raised_position"] = legacy // 10
        upgraded["kind"] = _V1_ALERT_SLOTS[legacy % 10]
    return upgraded


def _added_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """A step that only added fields with defaults: the old payload reads as the new."""
    return payload


# (type, from_version) -> function producing the payload of from_version + 1
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("ProbeRecorded", 1): _probe_recorded_v1_to_v2,
    # v3 added `condition`, `rpc_error_code`, `certificate_not_after`, `observations`, and
    # the outcome `maintenance`.
    ("ProbeRecorded", 2): _added_fields,
    # v2 added the health probe's `method`, `conditions`, `maintenance_when`, `observe`.
    ("ProviderRegistered", 1): _added_fields,
    # v3 added `chain` and `quote`.
    ("ProviderRegistered", 2): _added_fields,
    # v4 added `source` and `definition`.
    ("ProviderRegistered", 3): _added_fields,
    # v5 added `regions`.
    ("ProviderRegistered", 4): _added_fields,
    # v4 added `region`.
    ("ProbeRecorded", 3): _added_fields,
    # v2 added `region`.
    ("RateLimitChanged", 1): _added_fields,
    # v2 added `over_api`.
    ("ProviderRemoved", 1): _added_fields,
    # v2 added `failure_ratio_min_probes`.
    ("MonitoringChanged", 1): _added_fields,
    ("AlertAcknowledged", 1): _alert_acknowledged_v1_to_v2,
}

SCHEMA_VERSIONS: dict[str, int] = {name: 1 for name in EVENT_TYPES}
SCHEMA_VERSIONS["ProbeRecorded"] = 4
SCHEMA_VERSIONS["ProviderRegistered"] = 5
SCHEMA_VERSIONS["RateLimitChanged"] = 2
SCHEMA_VERSIONS["ProviderRemoved"] = 2
SCHEMA_VERSIONS["AlertAcknowledged"] = 2
SCHEMA_VERSIONS["MonitoringChanged"] = 2


def _reads_as_current(event_type: str, version: int) -> bool:
    """Whether a payload of `version` decodes as the current type as it is: every step
    from it to the current version only added fields with defaults."""
    current = SCHEMA_VERSIONS.get(event_type, 0)
    return 1 <= version <= current and all(
        UPCASTERS.get((event_type, step)) is _added_fields for step in range(version, current)
    )


# (type, schema version) pairs the typed decoder reads directly, for the page fast path.
_DIRECT_VERSIONS: frozenset[tuple[str, int]] = frozenset(
    (name, version)
    for name, current in SCHEMA_VERSIONS.items()
    for version in range(1, current + 1)
    if _reads_as_current(name, version)
)


def event_label(event: Event) -> str | None:
    """The index key log queries select by: a probe's kind and whether it
    succeeded (`health:ok`, `collection:fail`...)."""
    if isinstance(event, ProbeRecorded):
        return f"{event.kind}:{'ok' if event.outcome == 'success' else 'fail'}"
    return None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(position: int, event_type: str, schema_version: int, payload: bytes) -> Event:
    """Decode a stored payload, upcasting it when it has an older schema."""
    current = SCHEMA_VERSIONS.get(event_type)
    if current is None:
        raise EventDecodeError(position, event_type, "unknown event type")
    event: Event
    try:
        if (event_type, schema_version) in _DIRECT_VERSIONS:
            event = _decoder.decode(payload)
        elif schema_version < 1:
            raise EventDecodeError(position, event_type, f"no schema version {schema_version}")
        elif schema_version > current:
            raise EventDecodeError(
                position,
                event_type,
                f"schema version {schema_version} is newer than this cryptomon knows ({current})",
            )
        else:
            data = _dict_decoder.decode(payload)
            for version in range(schema_version, current):
                data = UPCASTERS[(event_type, version)](data)
            event = msgspec.convert(data, Event)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventDecodeError(position, event_type, str(exc)) from None
    except RecursionError:
        raise EventDecodeError(position, event_type, "nested too deeply") from None
    if type(event).__name__ != event_type:
        raise EventDecodeError(
            position, event_type, f"payload holds a {type(event).__name__} event"
        )
    return event


def decode_events(
    positions: Sequence[int],
    event_types: Sequence[str],
    schema_versions: Sequence[int],
    payloads: Sequence[bytes],
) -> list[Event]:
    """`decode_event` over many stored rows (a replay's page): the same events, or the same
    error. A decode per payload, then the type and schema checks once over the page: a
    third cheaper than a `decode_event` call per row (measured). Rows of an older schema
    to upcast, in a page that otherwise decodes (an acknowledgement of schema 1 among
    probes), are decoded again alone; a page where a payload fails or a type differs is
    decoded row by row."""
    try:
        events: list[Event] | None = list(map(_decoder.decode, payloads))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        events = None
    if events is None or [type(event).__name__ for event in events] != list(event_types):
        return [
            decode_event(*row)
            for row in zip(positions, event_types, schema_versions, payloads, strict=True)
        ]
    if not _DIRECT_VERSIONS.issuperset(zip(event_types, schema_versions, strict=True)):
        # Read as the current type those rows may mean something else: upcast them.
        for index, row in enumerate(
            zip(positions, event_types, schema_versions, payloads, strict=True)
        ):
            if (row[1], row[2]) not in _DIRECT_VERSIONS:
                events[index] = decode_event(*row)
    return events
