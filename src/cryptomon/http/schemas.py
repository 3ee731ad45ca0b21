"""The shapes of REST responses, as msgspec Structs.

Handlers return these and `/openapi.json` is generated from them, so the
documented schema cannot drift from what is served. Field names follow the
seed where its users' scripts read them. Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from cryptomon.config import Category
from cryptomon.events.audit import ChainState
from cryptomon.events.types import ErrorKind, ProbeOutcome
from cryptomon.projections.notices import Judgement, ProviderStatus
from cryptomon.projections.providers import ProvidersSummary
from cryptomon.projections.views import AlertView, IncidentView


class Schema(msgspec.Struct, frozen=True, kw_only=True):
    pass


class ServiceInfo(Schema, frozen=True):
    name: str
    version: str
    description: str
    started_at: str
    uptime_seconds: float
    event_position: int
    providers: int
    dashboard: str
    docs: str
    endpoints: dict[str, str]


class DatabaseComponent(Schema, frozen=True):
    status: str
    path: str
    size_mb: float
    event_position: int
    failed_appends: int
    # The hash chain check (GET /api/audit/verify): verifying (the history before the
    # start-up snapshot, in the background), intact, broken (unhealthy) or unverified
    # (the history could not be read).
    history: str
    error: str | None = None


class SchedulerComponent(Schema, frozen=True):
    status: str
    active_jobs: int
    # Fewer than configured when other instances on the same log probe the rest.
    providers_probed: int


class WebSocketComponent(Schema, frozen=True):
    status: str
    active_connections: int


class ReadModelsComponent(Schema, frozen=True):
    # following: applying the log as it grows; stopped: their answers no longer move.
    status: Literal["following", "stopped"]
    position: int
    lag: int  # events committed and not yet applied


class ConfigComponent(Schema, frozen=True):
    # "error": the last reload's file did not load, and the one before it still runs. A
    # detail, never a reason for a 503: a bad edit must not pull a working instance out of
    # a load balancer.
    status: Literal["ok", "error", "conflict"]
    source: str
    errors: list[str]  # of the last reload attempt; empty when it applied
    last_reload_attempt: str | None
    last_reload_applied: str | None
    # "conflict": on PostgreSQL, another running instance's file defines a provider
    # otherwise (or this file lacks it); its recorded definition stands. Each says which.
    conflicts: list[str] = []


class HealthComponents(Schema, frozen=True):
    database: DatabaseComponent
    scheduler: SchedulerComponent
    websocket: WebSocketComponent
    read_models: ReadModelsComponent
    # The monitored providers: reported here, never a reason for a 503.
    providers: ProvidersSummary
    config: ConfigComponent


# cryptomon's own parts that /health and /readyz judge (the history only in /health).
Component = Literal["database", "history", "read_models", "scheduler"]


class ComponentProblem(Schema, frozen=True):
    component: Component
    detail: str  # what is wrong, for a person reading a probe's output


class HealthMetrics(Schema, frozen=True):
    probes_last_hour: int
    failures_last_hour: int
    avg_response_time_ms: float | None
    open_alerts: int
    probes_lost: int
    read_model_lag: int


class Health(Schema, frozen=True):
    # cryptomon's own health, answered 200 or 503 with it; the providers' verdict (the
    # seed's healthy / degraded / unhealthy) is components.providers.system_health.
    status: Literal["healthy", "unhealthy"]
    timestamp: str
    components: HealthComponents
    metrics: HealthMetrics
    problems: list[ComponentProblem]  # empty when healthy


class Liveness(Schema, frozen=True):
    status: Literal["alive"]


class Readiness(Schema, frozen=True):
    status: Literal["ready", "not_ready"]
    timestamp: str
    checked: list[Component]
    problems: list[ComponentProblem]  # empty when ready


class LatencyStats(Schema, frozen=True):
    total_attempts: int
    successful: int
    failed: int
    timeout: int
    rate_limited: int
    success_rate: float | None
    uptime: float | None
    avg_response_time_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class ConditionView(Schema, frozen=True):
    condition: str  # as configured
    seen: str  # the value the answer showed, cut short, no secret in it


class LastProbe(Schema, frozen=True):
    at: str
    outcome: ProbeOutcome
    endpoint: str
    http_status: int | None
    response_time_ms: float | None
    error_type: ErrorKind | None
    error_message: str | None
    # The condition that failed, or the maintenance condition that held.
    condition: ConditionView | None = None
    rpc_error_code: int | None = None


class CertificateView(Schema, frozen=True):
    expires_at: str
    days_left: float  # from now; negative once expired


class ObservationView(Schema, frozen=True):
    value: int | float | str | bool
    at: str  # when the probe that observed it started
    endpoint: str


class ProviderRegion(Schema, frozen=True):
    """A provider as one region's probes judge it (the status rules, in that region)."""

    status: ProviderStatus  # unknown: not judged there yet, or the region is lost
    details: str  # why it has that status there
    last_probe_at: str | None  # that region's last health probe of it
    last_status_change: str | None
    consecutive_failures: int
    # The region stopped reporting (`RegionLost`) and has not probed it since: its status
    # is unknown, and it does not count in the provider's.
    lost: bool
    lost_at: str | None = None


class ProviderView(Schema, frozen=True):
    name: str
    category: str
    base_url: str
    status: ProviderStatus
    response_time_ms: float | None
    p95_ms_24h: float | None
    uptime_24h: float | None
    consecutive_failures: int
    last_check: str | None
    last_status_change: str | None
    last_probe: LastProbe | None
    last_error: LastProbe | None
    api_key: str | None  # masked as "abcd…"; None when no key is configured
    rate_limit_percentage: float | None
    # From the last HTTPS probe; None for a provider probed over plain HTTP.
    certificate: CertificateView | None = None
    observations: dict[str, ObservationView] = {}  # the last value of each, by name
    # The judgements against its chain or pair that hold now (lagging, stale, wrong_chain,
    # deviation, quote_stale), each with what was found; an online provider with any is
    # degraded.
    judgements: dict[str, str] = {}
    # The maintenance window its last health probe fell in, while it is in one.
    maintenance_window: ProviderWindow | None = None
    # Removed (`ProviderRemoved`): no longer probed, its last state and history kept.
    removed: bool = False
    removed_at: str | None = None
    # Who defines it: the config file, the bundled catalogue or the API (only then can
    # it be changed over the API; a catalogue one can be paused or deleted).
    source: Literal["file", "api", "catalogue"] = "file"
    # The position of its last configuration event: the ETag a PUT names in If-Match.
    version: int = 0
    # Defined over the API: its definition as accepted (the keys of a [[providers]] table).
    definition: dict[str, Any] | None = None
    paused_by: str | None = None  # while paused (status `paused`): who paused it, and when
    paused_at: str | None = None
    regions: Annotated[
        dict[str, ProviderRegion],
        msgspec.Meta(
            description="By region name, how that region's probes judge the provider; empty"
            " when no probe of it carried a region (instances without `[instance] region`)"
        ),
    ] = {}
    status_regions: Annotated[
        list[str],
        msgspec.Meta(
            description="The regions its status comes from: every reporting region when they"
            " agree; when they disagree (status degraded, the reason regional), those that do"
            " not see it online. Empty without regions"
        ),
    ] = []


class ProviderWindow(Schema, frozen=True):
    id: str
    name: str
    ends_at: str | None


class MaintenanceWindowView(Schema, frozen=True):
    """A maintenance window: where it comes from, what it covers and when.

    `state` is `upcoming`, `active` or `past` (by now), or `cancelled`; `next_start` and
    `next_end` bound the occurrence in progress, else the next one (None when none is to
    come)."""

    id: str
    name: str
    source: Literal["file", "api"]
    state: Literal["upcoming", "active", "past", "cancelled"]
    providers: list[str]
    categories: list[str]
    cron: str | None
    duration_seconds: float | None
    start: str | None
    end: str | None
    next_start: str | None
    next_end: str | None
    scheduled_at: str
    position: int
    cancelled_at: str | None = None
    cancelled_by: str | None = None


class MaintenanceWindowBody(Schema, frozen=True, forbid_unknown_fields=True):
    """The body of `POST /api/maintenance`: the keys of a `[[maintenance]]` table of the
    config file (`MaintenanceConfig`), checked as the file's are. Name the providers or the
    categories it covers (or both), and set `cron` and `duration` (recurring) or `start`
    and `end` (one-off), never both pairs; a key is left out, never sent as null."""

    name: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=100,
            pattern="^[^/]*$",
            description="what the window is called: the provider's status details and the"
            " dashboard name it (not blank, no '/')",
        ),
    ]
    providers: Annotated[
        list[str],
        msgspec.Meta(description="the providers it covers, by name (each one configured)"),
    ] = []
    categories: Annotated[
        list[Category], msgspec.Meta(description="the categories whose providers it covers")
    ] = []
    cron: (
        Annotated[
            str,
            msgspec.Meta(description="recurring: a cron expression (UTC); each fire starts one"),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    duration: (
        Annotated[
            str,
            msgspec.Meta(
                pattern="^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$",
                description='recurring: how long each occurrence lasts, like "30m" (at most 366d)',
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    start: (
        Annotated[
            datetime,
            msgspec.Meta(
                description="one-off: when it starts, RFC 3339 with an offset, like"
                " 2025-06-01T02:00:00Z",
                extra_json_schema={"format": "date-time"},
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    end: (
        Annotated[
            datetime,
            msgspec.Meta(
                description="one-off: when it ends (after start; the end itself is not"
                " covered), RFC 3339 with an offset",
                extra_json_schema={"format": "date-time"},
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class MaintenanceList(Schema, frozen=True):
    count: int
    windows: list[MaintenanceWindowView]


class ProviderList(Schema, frozen=True):
    count: int
    providers: list[ProviderView]


class ProviderStats(Schema, frozen=True):
    provider_name: str
    time_window_hours: float
    connection_stats: LatencyStats
    data_collection_stats: LatencyStats
    failure_count: int
    uptime_1h: float | None
    uptime_24h: float | None
    uptime_7d: float | None
    uptime_30d: float | None
    removed: bool = False  # the provider was removed; its history stays
    removed_at: str | None = None
    region: Annotated[
        str | None,
        msgspec.Meta(
            description="With `?region=`, the region whose probes alone the figures count;"
            " null: every probe, from every region"
        ),
    ] = None


class SystemStatus(Schema, frozen=True):
    total_apis: int
    online: int
    degraded: int
    offline: int
    rate_limited: int
    maintenance: int
    unconfigured: int
    unknown: int
    avg_response_time_ms: float | None
    last_update: str | None
    system_health: str
    open_alerts: int
    event_position: int
    paused: int = 0  # not probed until resumed (counted in total_apis)


class MetricsPoint(Schema, frozen=True):
    timestamp: str
    probes: int
    failures: int
    avg_response_time_ms: float | None
    # The median and 95th percentile latency of the step's successful probes, estimated
    # from the rollups' histograms (within a bin); None without one.
    p50_ms: float | None = None
    p95_ms: float | None = None


class SystemMetrics(Schema, frozen=True):
    hours: float
    step_seconds: int
    points: list[MetricsPoint]
    uptime: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class ProviderSeries(Schema, frozen=True):
    """One provider's health probes per step (a sparkline), oldest first."""

    provider: str
    hours: float
    step_seconds: int
    points: list[MetricsPoint]
    removed: bool = False  # the provider was removed; its history stays
    removed_at: str | None = None


class RateLimitView(Schema, frozen=True):
    provider: str
    limit_type: str
    limit_value: int
    current_usage: int
    percentage: float
    reset_time: str | None
    reset_in_seconds: float | None
    blocked_until: str | None
    status: str
    updated_at: str | None


Percent = Annotated[float, msgspec.Meta(ge=0)]
Day = Annotated[str, msgspec.Meta(pattern="^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]


class UsageHourView(Schema, frozen=True):
    """One hour of rate-limit usage, in percent of the limit. An hour without a reported
    change held the level the last one left (`reported` false); before any, all None."""

    hour: str  # its start
    opening_percentage: Percent | None
    peak_percentage: Percent | None
    closing_percentage: Percent | None
    blocked: bool  # a block (a 429, Retry-After) was reported in the hour
    reported: bool


class RateLimitHistory(Schema, frozen=True):
    """One provider's rate-limit usage per hour, oldest first, the last the current one."""

    provider: str
    hours: int
    step_seconds: int
    limit_type: str
    limit_value: int
    points: list[UsageHourView]


UptimePercent = Annotated[float, msgspec.Meta(ge=0, le=100)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class ProviderUptimeDays(Schema, frozen=True):
    """One provider's days, in the order of the answer's `dates`: the n-th of each list is
    the n-th day's."""

    provider: str
    uptime: UptimePercent | None  # over all the days; None without probes
    probes: Count
    failures: Count  # failed, timed out or rate limited
    uptime_by_day: list[UptimePercent | None]  # None: no probes that day
    probes_by_day: list[Count]
    failures_by_day: list[Count]


class UptimeDaily(Schema, frozen=True):
    """Health-probe uptime per UTC day, from the rollups: the last `days` days, oldest
    first, today (so far) the last. Each provider's days are lists aligned with `dates`
    (columns, not an object per day: 100 providers of 90 days stay small and quick).
    Probes in maintenance count as the rollups count them (not at all, unless
    `maintenance_counts_in_uptime`)."""

    days: int
    dates: list[Day]
    count: int
    providers: list[ProviderUptimeDays]


Minutes = Annotated[float, msgspec.Meta(ge=0)]


class ProviderUptimeReport(Schema, frozen=True):
    """One provider over a report's period, from the time it spent in each status (the
    durations read model), its incidents and its health-probe latency. Monitored time is
    time `online`, `degraded`, `offline` or `rate_limited`; uptime is the share of it not
    `offline`. Maintenance (declared or a window) and time not monitored (`unknown`,
    `unconfigured`, `paused`, not probed) are left out of uptime and given apart."""

    provider: str
    category: str
    uptime_percent: UptimePercent | None  # None: no monitored time in the period
    monitored_minutes: Minutes
    downtime_minutes: Minutes  # offline
    degraded_minutes: Minutes
    rate_limited_minutes: Minutes
    maintenance_minutes: Minutes  # excluded from uptime
    not_monitored_minutes: Minutes  # excluded from uptime
    incidents: Count  # open at some time in the period
    longest_incident_id: int | None
    longest_incident_minutes: Minutes | None  # the whole incident's, open ones up to as_of
    p95_latency_ms: float | None  # of its successful health probes in the period
    probes: Count  # its health probes in the period


class UptimeReport(Schema, frozen=True):
    """Uptime per provider over whole UTC days [from, to). Provenance: computed from the
    read models at log `position`, whose event has hash `chain_hash`; time is counted up
    to each provider's last health probe, the newest at `as_of`. `verify --position N
    --hash H` checks a log holds that position, and `report --until N` computes the same
    report from it."""

    from_: str = msgspec.field(name="from")
    to: str
    position: int
    chain_hash: str | None  # None for an empty log
    as_of: str | None  # None before any health probe
    count: int
    providers: list[ProviderUptimeReport]


class RateLimitList(Schema, frozen=True):
    count: int
    rate_limits: list[RateLimitView]


class LogPage(Schema, frozen=True):
    log_type: str
    hours: float
    count: int
    logs: list[dict[str, Any]]


class AlertList(Schema, frozen=True):
    count: int
    alerts: list[AlertView]


class IncidentList(Schema, frozen=True):
    count: int
    incidents: list[IncidentView]


class AcknowledgeBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    note: str | None = msgspec.field(default=None)
    actor: str | None = None


class Acknowledged(Schema, frozen=True):
    success: bool
    alert: AlertView
    position: int


class JobView(Schema, frozen=True):
    id: str
    description: str
    schedule: str
    next_run: str | None
    last_run: str | None
    last_duration_ms: float | None
    runs: int
    errors: int
    skipped: int
    running: int
    last_error: str | None


class SchedulerStatus(Schema, frozen=True):
    running: bool
    jobs: list[JobView]
    probes_planned: int
    probes_started: int
    skipped_overlapping: int
    skipped_late: int
    skipped_rate_limited: int
    probes_lost: int


class ConfigReloaded(Schema, frozen=True):
    """What a reload applied (providers by name) and what it could not."""

    success: bool
    source: str
    added: list[str]
    removed: list[str]
    changed: list[str]  # new schedule, conditions or thresholds, taken in place
    thresholds_changed: list[str]  # `[monitoring]` keys, recorded as `MonitoringChanged`
    needs_restart: list[str]  # keys whose new values apply only after a restart
    position: int  # the log's head after the reload's events
    # Providers another running instance's file defines otherwise (on PostgreSQL): not
    # recorded from this file, each saying why.
    conflicts: list[str] = []


class Triggered(Schema, frozen=True):
    success: bool
    job_id: str
    tasks_run: int
    triggered_by: str
    position: int


class DatabaseStats(Schema, frozen=True):
    database_size_mb: float
    events: int
    event_position: int
    snapshots: int
    archived_segments: int
    tables: dict[str, int]
    events_by_type: dict[str, int]


class DatabaseHealth(Schema, frozen=True):
    status: str
    path: str
    writable: bool
    size_mb: float
    event_position: int
    read_model_position: int
    failed_appends: int
    last_hash: str
    history: str
    error: str | None = None


class ChainStatus(Schema, frozen=True):
    """The hash chain as the service's check knows it: verified at start-up, then each
    commit as it lands. `ok` is true when the chain is intact from position 1 up to
    `last_position` (`count` events); while start-up's check of the history runs
    (`status` verifying) it is false with no `broken_at`. A break gives `broken_at` and
    `reason`, as `python -m cryptomon verify` would. `head` is the log's head: the check
    catches up with it after each commit."""

    ok: bool
    status: ChainState
    count: int
    last_position: int
    last_hash: str
    head: int
    verified_at: str | None  # when a walk last found it intact up to last_position
    broken_at: int | None = None
    reason: str | None = None  # why it is broken, or could not be verified
    walking: bool = False  # a fresh full walk (POST) is running
    full_walk_at: str | None = None  # when the last fresh full walk ended


class ErrorSampleView(Schema, frozen=True):
    at: str
    provider: str
    endpoint: str
    message: str | None
    http_status: int | None


class FailureAnalysisView(Schema, frozen=True):
    hours: float
    total_failures: int
    failures_by_error_type: dict[str, int]
    failures_by_provider: dict[str, int]
    failures_by_hour: dict[str, int]
    top_failing_providers: list[dict[str, Any]]
    recent_errors: dict[str, ErrorSampleView]
    retry_statistics: dict[str, int]


class ConfigStats(Schema, frozen=True):
    source: str
    total_providers: int
    probed: int
    unconfigured: int
    disabled: int
    by_category: dict[str, int]
    with_api_key: int
    api_token_configured: bool
    cors_origins: list[str]
    # Reads need a token (the read token or the API token): the dashboard asks for one.
    read_token_configured: bool = False


class EventView(Schema, frozen=True):
    position: int
    event_id: str
    stream: str
    version: int
    type: str
    recorded_at: str
    correlation_id: str | None
    causation_id: str | None
    actor: str | None
    hash: str
    payload: dict[str, Any]


class EventPage(Schema, frozen=True):
    count: int
    events: list[EventView]
    next_after: int | None
    head: int


class ConnectionView(Schema, frozen=True):
    client_id: str
    connected_at: str
    last_ping: str | None
    topics: list[str]
    queue_depth: int
    messages_sent: int


class WebSocketStats(Schema, frozen=True):
    active_connections: int
    connections: list[ConnectionView]
    background_tasks_running: bool
    timestamp: str
    messages_sent: int
    dropped: int  # clients closed because their queue overflowed
    disconnect_reasons: dict[str, int]


class NotificationChannelView(Schema, frozen=True):
    """One notification channel's deliveries (kept 30 days)."""

    name: str
    kind: str
    delivered: int
    failed: int  # gave up, plus those pending after a failed attempt
    gave_up: int
    retrying: int
    pending: int  # waiting to be sent, retrying included
    last_error: str | None
    last_error_at: str | None
    last_delivered_at: str | None
    # Whether this instance delivers the channel now: always on SQLite; on PostgreSQL the
    # holder of its lock, whose counts of pending and retrying rows are the ones to read.
    delivering: bool


class NotificationsView(Schema, frozen=True):
    enabled: bool  # false when no channel is configured
    position: int  # every notice up to this event position is in the outbox
    checkpoint_position: int
    channels: list[NotificationChannelView]


class LagHourView(Schema, frozen=True):
    """One hour of a node's lag, as measured at its probes."""

    hour: str  # the hour's start
    probes: int
    mean_lag: float  # blocks
    max_lag: int


class ChainNodeSummary(Schema, frozen=True):
    provider: str
    head: int | None  # None until a probe observed it
    lag: int | None  # blocks behind the best head, at its last probe
    states: list[Judgement]


class ChainSummary(Schema, frozen=True):
    name: str
    best_head: int | None  # the second highest head of the nodes (see /api/chains/{chain})
    best_at: str | None  # the start of the probe it was judged at
    block_rate: float | None  # blocks per second: the median of the nodes' own rates
    node_count: int
    nodes: list[ChainNodeSummary]


class ChainList(Schema, frozen=True):
    count: int
    chains: list[ChainSummary]


class ChainRulesView(Schema, frozen=True):
    """The thresholds the chain's nodes are judged by: `[chains.<name>]` over defaults."""

    chain_id: int | None  # the chain id a node must answer; None: not checked
    lag_blocks: int
    lag_probes: int
    stale_blocks: int
    stale_after_seconds: float


class ChainNodeView(Schema, frozen=True):
    """One node of a chain. Every figure is as of the node's own last probe, except
    `seconds_since_head_moved`, which runs from the probe its head last moved at to the
    chain's latest judged probe (`best_at` of the chain), never to the wall clock: it is
    what the event log says, the same on a replay, and does not grow while nothing is
    probed."""

    provider: str
    head: int | None
    head_at: str | None  # the start of the probe that observed it
    succeeded: bool  # whether the probe that observes its head last succeeded
    lag: int | None  # blocks behind the best head carried to its probe's time
    lag_seconds: float | None  # that lag at the chain's block rate; None with no rate yet
    seconds_since_head_moved: float | None
    head_moved_at: str | None
    chain_id: int | None  # as last observed; None when not observed
    states: list[Judgement]  # lagging, stale, wrong_chain: those that hold, oldest first
    block_rate: float | None  # its own blocks per second
    history: list[LagHourView]  # hourly, oldest first, up to 7 days


class ChainView(Schema, frozen=True):
    name: str
    best_head: int | None
    best_at: str | None
    block_rate: float | None
    rules: ChainRulesView
    nodes: list[ChainNodeView]


class QuoteSourceView(Schema, frozen=True):
    provider: str
    price: float | None  # its last price; None until a probe observed one
    at: str | None  # the start of the probe that observed it
    succeeded: bool  # whether the probe that observes its price last succeeded
    deviation_percent: float | None  # off the median at its last probe; None with no median
    data_time: str | None  # when its answer said the price is from (observed `price_time`)
    # How old the data was at the probe: the probe's start minus `data_time`; None when
    # `price_time` is not observed.
    data_age_seconds: float | None
    states: list[Judgement]  # deviation, quote_stale


class PairView(Schema, frozen=True):
    name: str
    # The median of the sources' recent prices, at `median_at` (the last probe of any
    # source). None below the sources a median needs: `median_note` then says why.
    median: float | None
    median_at: str | None
    median_note: str | None
    source_count: int
    sources: list[QuoteSourceView]


class PairList(Schema, frozen=True):
    count: int
    pairs: list[PairView]


class PublicRegion(Schema, frozen=True):
    """One region's view of a provider, as the public status page shows it: its name and
    a word for the state seen from there."""

    name: str
    state: Literal["operational", "degraded", "outage", "maintenance", "unknown"]
    label: str


class PublicProvider(Schema, frozen=True):
    """One provider as the public status page shows it: its name, its heading and a word
    for its state; nothing internal."""

    name: str
    group: str
    state: Literal["operational", "degraded", "outage", "maintenance", "unknown"]
    label: str  # the words shown: "Operational", "Degraded performance", "Outage"...
    # Probed from regions: each one's, by name; empty without regions.
    regions: list[PublicRegion] = []


class PublicStatus(Schema, frozen=True):
    """What `/status` shows, for its script to update the page with."""

    title: str
    overall: Literal["operational", "degraded", "outage", "maintenance", "unknown"]
    overall_label: str
    updated_at: str
    providers: list[PublicProvider]
    # The Incidents section as the page renders it (escaped, in plain words): the script
    # puts it in place, so incidents opening and closing show live too.
    incidents_html: str
