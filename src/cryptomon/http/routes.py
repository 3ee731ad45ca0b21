"""Every route in one table: the handler, its parameters and its response type.

One declaration drives everything derived from it: `add_routes` registers
each handler behind its parameters' parsing (`params.parsed`: the handler finds
them in `request[ARGUMENTS]`); for `write=True`, behind the write check
(`authorization.write_check`); for every other route, behind the read check
(`authorization.read_check`: the read token, when one is configured, unless `open_to`
lets the request in), the live feed behind its own (`authorization.feed_check`); and
all of them behind the per-client limiter, their errors answered as problem documents
(`errors.guarded`).
`/openapi.json` is built from the same table, so the docs list exactly what is
served and checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec
from aiohttp import web

from cryptomon.config import ALERT_SEVERITIES, REGION_PATTERN, ProviderConfig
from cryptomon.events.types import EVENT_TYPES
from cryptomon.http import (
    audit,
    badges,
    dashboard,
    notifications,
    openapi,
    prometheus,
    schemas,
    status_page,
)
from cryptomon.http.authorization import (
    Exemption,
    anyone,
    feed_check,
    read_check,
    write_check,
)
from cryptomon.http.cache import cached
from cryptomon.http.errors import Check, guarded
from cryptomon.http.keys import OPENAPI_DOCUMENT, RESPONSE_CACHE
from cryptomon.http.params import Param, parsed
from cryptomon.http.views import (
    alerts,
    analytics,
    chains,
    config,
    database,
    events,
    incidents,
    logs,
    maintenance,
    providers,
    quotes,
    rate_limits,
    reports,
    scheduler,
    service,
    status,
    uptime,
)
from cryptomon.projections.notices import LOG_TYPES
from cryptomon.projections.views import IncidentView

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Link:
    """An OpenAPI link: a value in this answer names the target operation's parameter,
    so clients (and schemathesis' stateful tests) can follow it."""

    operation_id: str
    parameter: str
    value: str  # a runtime expression, e.g. "$response.body#/alerts/0/id"


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    response: type[msgspec.Struct] | None  # None: not JSON
    params: tuple[Param, ...] = ()
    # The JSON body it takes, for the document only: the handler checks the body itself,
    # with messages naming the key (a window's as the config file's are).
    body: type[msgspec.Struct] | None = None
    # The status of a success: 201 for a create.
    ok_status: int = 200
    # Not JSON: its content type, for the document (/metrics' text, a badge's SVG); with
    # a JSON `response`, the other type it answers in (a report's CSV).
    media_type: str | None = None
    # Runs only for a client allowed to write (`authorization.write_check`): the bearer
    # token when one is configured, loopback otherwise.
    write: bool = False
    # A read (any route not a write) needs the read token when one is configured
    # (`authorization.read_check`), except for the requests this lets in: `anyone` for the
    # health probes, the badges and the API's document; `/` lets in a browser asking
    # for the dashboard's page (its JSON answer is a read like the others).
    open_to: Exemption | None = None
    errors: tuple[int, ...] = field(default=(400,))  # answered with a problem body
    # Health checks answer 503 with their own body when something is wrong; the
    # descriptions say what their 200 and that answer mean, in the OpenAPI document.
    unhealthy_status: int | None = None
    ok_description: str = "OK"
    # Statuses answered in the success's content type instead of a problem body, and what
    # each means: an unknown provider's badge is a grey badge with 404.
    alike: tuple[tuple[int, str], ...] = ()
    unhealthy_description: str = "Unhealthy: the same body, saying what is wrong"
    # A WebSocket: a plain GET (no Upgrade header) answers 426 with `Upgrade: websocket`.
    websocket: bool = False
    # Answered from the read models alone: reuse the answer for a second (see cache.py).
    cached: bool = False
    links: tuple[Link, ...] = ()

    @property
    def exemption(self) -> Exemption | None:
        """Which requests may read it without the read token: `open_to`'s; and anyone for
        the badges and the public status page (`/status` and under it, whatever their
        declaration says: a public page behind the read token would be no public page)."""
        if self.path == "/status" or self.path.startswith(("/status/", "/badge/")):
            return anyone
        return self.open_to


def hours(default: float) -> Param:
    """The window, in hours, `default` when the query does not say (the day rollups
    keep 400 days)."""
    return Param(
        "hours",
        "query",
        "number",
        "the window, in hours",
        minimum=1 / 60,
        maximum=24 * 400,
        default=default,
    )


NAME = Param("name", "path", "string", "the provider's name")
REGION = Param(
    "region",
    "query",
    "string",
    "only the probes from this region (as `[instance] region` names it; the provider's"
    " `regions` lists those it has); 404 for a region it has no data from",
    max_length=32,
    pattern=REGION_PATTERN,
    pattern_description="a region's name: lower-case letters, digits and dashes, starting"
    " with a letter or digit, at most 32 characters",
)


def if_match(*, required: bool) -> Param:
    return Param(
        "If-Match",
        "header",
        "string",
        'the provider\'s ETag, as GET gives it ("42"), or * for whatever it is now',
        required=required,
    )


def badge(path: str, handler: Handler, summary: str, *params: Param) -> Endpoint:
    """A badge: SVG, no token needed (see badges.py), a grey one for an unknown provider."""
    return Endpoint(
        "GET",
        path,
        handler,
        summary + " (SVG, shields.io's flat style; cacheable for a minute, no token needed)",
        None,
        (NAME, *params),
        open_to=anyone,
        media_type=badges.SVG_TYPE,
        ok_description="The badge (a removed provider's says removed, in grey)",
        alike=((404, "No such provider: a grey badge saying unknown"),),
    )


CHAIN = Param("chain", "path", "string", "the chain's name, as its nodes' `chain` says")
PAIR = Param("pair", "path", "string", "the pair, as its sources' `quote` says (BTC-USD)")

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/",
        dashboard.root,
        "Service information (browsers asking for text/html get the dashboard page)",
        schemas.ServiceInfo,
        open_to=dashboard.asks_for_page,
    ),
    Endpoint("GET", "/info", service.info, "Service information", schemas.ServiceInfo),
    Endpoint(
        "GET",
        "/health",
        service.health,
        "Health of the service, with the monitored providers' state in the body",
        schemas.Health,
        errors=(),
        open_to=anyone,
        unhealthy_status=503,
        ok_description=(
            "cryptomon's own components are healthy: the database accepts appends, the"
            " scheduler runs, the read models follow the log and its history is not broken."
            " Providers being offline or degraded does not change this answer: see"
            " components.providers (system_health is the seed's verdict on them)"
        ),
        unhealthy_description=(
            "One of cryptomon's own components is failing: `problems` names each one and"
            " why. Never answered because of the monitored providers"
        ),
    ),
    Endpoint(
        "GET",
        "/livez",
        service.livez,
        "Liveness: the process answers (no dependency is checked)",
        schemas.Liveness,
        errors=(),
        open_to=anyone,
        ok_description="The process is alive and its event loop answers",
    ),
    Endpoint(
        "GET",
        "/readyz",
        service.readyz,
        "Readiness: the store accepts appends, the read models follow the log, the scheduler runs",
        schemas.Readiness,
        errors=(),
        open_to=anyone,
        unhealthy_status=503,
        ok_description="Ready to serve and record",
        unhealthy_description=(
            "Not ready: `problems` names each component that is not (database, read_models,"
            " scheduler) and why"
        ),
    ),
    Endpoint(
        "GET",
        "/api/providers",
        providers.providers,
        "Providers and their status",
        schemas.ProviderList,
        (
            Param("category", "query", "string", max_length=60, description="only this category"),
            Param("status", "query", "string", max_length=30, description="only this status"),
            Param(
                "removed",
                "query",
                "boolean",
                "include removed providers (each marked `removed`, with `removed_at`)",
            ),
        ),
        cached=True,
        links=tuple(
            Link(operation, "name", "$response.body#/providers/0/name")
            for operation in (
                "get_provider",
                "get_provider_stats",
                "get_provider_series",
                "get_provider_page",
            )
        ),
    ),
    Endpoint(
        "GET",
        "/api/providers/{name}",
        providers.provider,
        "One provider (a removed one too, marked `removed`), with how each region's probes"
        " judge it (`regions`)",
        schemas.ProviderView,
        (NAME,),
        errors=(404,),
        cached=True,
    ),
    Endpoint(
        "POST",
        "/api/providers",
        providers.create_provider,
        "Define a provider (JSON body: the keys of a [[providers]] table, checked as the"
        " file's are; a key or secret header names its env var, never its value); answers"
        " 201 with the provider, its ETag and Location",
        schemas.ProviderView,
        body=ProviderConfig,
        ok_status=201,
        ok_description="Created: the provider, scheduled; its ETag is its version",
        write=True,
        errors=(400, 401, 403, 409, 413),
        links=tuple(
            Link(operation, "name", "$response.body#/name")
            for operation in (
                "put_replace_provider",
                "post_pause_provider",
                "delete_delete_provider",
            )
        ),
    ),
    Endpoint(
        "PUT",
        "/api/providers/{name}",
        providers.replace_provider,
        "Change a provider defined over the API (the whole definition, as for POST);"
        " If-Match must name its ETag: 428 without one, 412 when it changed meanwhile."
        " One from the config file or the catalogue: 409",
        schemas.ProviderView,
        (NAME, if_match(required=True)),
        body=ProviderConfig,
        write=True,
        errors=(400, 401, 403, 404, 409, 412, 413, 428),
    ),
    Endpoint(
        "POST",
        "/api/providers/{name}/pause",
        providers.pause_provider,
        "Pause a provider: not probed, status paused, its open alerts resolved",
        schemas.ProviderView,
        (NAME,),
        write=True,
        errors=(401, 403, 404, 409),
    ),
    Endpoint(
        "POST",
        "/api/providers/{name}/resume",
        providers.resume_provider,
        "Resume a paused provider (or a catalogue one deleted over the API): probed again,"
        " judged afresh",
        schemas.ProviderView,
        (NAME,),
        write=True,
        errors=(401, 403, 404, 409),
    ),
    Endpoint(
        "DELETE",
        "/api/providers/{name}",
        providers.delete_provider,
        "Stop probing a provider defined over the API, or disable a catalogue one (resume"
        " brings it back); its history stays, marked removed. If-Match is optional. One"
        " from the config file: 409",
        schemas.ProviderView,
        (NAME, if_match(required=False)),
        write=True,
        errors=(400, 401, 403, 404, 409, 412),
    ),
    Endpoint(
        "GET",
        "/api/providers/{name}/stats",
        providers.provider_stats,
        "Uptime, latency percentiles and failures of one provider over a window, from"
        " every region's probes or (`?region=`) one region's",
        schemas.ProviderStats,
        (NAME, hours(24), REGION),
        errors=(400, 404),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/providers/{name}/series",
        providers.provider_series,
        "Health probes and average latency of one provider per minute (hour, day)",
        schemas.ProviderSeries,
        (NAME, hours(1)),
        errors=(400, 404),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/providers/{name}",
        dashboard.provider_page,
        "One provider, as /api/providers/{name} (browsers asking for text/html get its"
        " dashboard page: latency, uptime per day, rate-limit usage, last probes)",
        schemas.ProviderView,
        (NAME,),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/uptime/daily",
        uptime.uptime_daily,
        "Health-probe uptime per UTC day of every provider (or one), from the rollups:"
        " the last `days` days, today the last; a day without probes has uptime null",
        schemas.UptimeDaily,
        (
            Param(
                "days",
                "query",
                "integer",
                "how many days, today the last (the day rollups keep 400)",
                minimum=1,
                maximum=400,
                default=90,
            ),
            Param("provider", "query", "string", max_length=100, description="only this provider"),
        ),
        errors=(400, 404),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/reports/uptime",
        reports.uptime,
        "An SLA report over whole UTC days: per provider its uptime (time not offline of"
        " the time monitored, from the status changes in the log), downtime, degraded and"
        " maintenance minutes, incidents, longest incident and p95 latency; with the log"
        " position and chain hash it was computed at",
        schemas.UptimeReport,
        (
            Param(
                "from",
                "query",
                "string",
                "the first day: a UTC midnight, unix seconds or ISO 8601"
                " (2026-11-01T00:00:00Z); by default the first of this month",
                moment=True,
            ),
            Param(
                "to",
                "query",
                "string",
                "the end (excluded): a UTC midnight after `from`, at most 400 days later;"
                " by default the next midnight",
                moment=True,
            ),
            Param("provider", "query", "string", max_length=100, description="only this provider"),
            Param(
                "format",
                "query",
                "string",
                "json (the default) or csv: a row per provider, with the period and"
                " provenance on each",
                enum=("json", "csv"),
            ),
        ),
        media_type=reports.CSV_TYPE,
        errors=(400, 404),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/chains",
        chains.chains,
        "Chains: each one's best head, block rate and nodes",
        schemas.ChainList,
        cached=True,
        links=(Link("get_chain", "chain", "$response.body#/chains/0/name"),),
    ),
    Endpoint(
        "GET",
        "/api/chains/{chain}",
        chains.chain,
        "One chain: its best head and each node's head, lag, states and hourly lag",
        schemas.ChainView,
        (CHAIN,),
        errors=(404,),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/quotes",
        quotes.quotes,
        "Quoted pairs: each one's median price and each source's price and deviation",
        schemas.PairList,
        cached=True,
        links=(Link("get_quote", "pair", "$response.body#/pairs/0/name"),),
    ),
    Endpoint(
        "GET",
        "/api/quotes/{pair}",
        quotes.quote,
        "One pair: its median price and each source's price, deviation and data age",
        schemas.PairView,
        (PAIR,),
        errors=(404,),
        cached=True,
    ),
    Endpoint(
        "GET", "/api/status", status.status, "System status", schemas.SystemStatus, cached=True
    ),
    Endpoint(
        "GET",
        "/api/status/metrics",
        status.status_metrics,
        "System metrics history",
        schemas.SystemMetrics,
        (hours(1),),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/rate-limits",
        rate_limits.rate_limits,
        "Rate-limit usage of every provider",
        schemas.RateLimitList,
        cached=True,
        links=tuple(
            Link(operation, "name", "$response.body#/rate_limits/0/provider")
            for operation in ("get_rate_limit", "get_rate_limit_history")
        ),
    ),
    Endpoint(
        "GET",
        "/api/rate-limits/{name}",
        rate_limits.rate_limit,
        "Rate-limit usage of one provider",
        schemas.RateLimitView,
        (NAME,),
        errors=(404,),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/rate-limits/{name}/history",
        rate_limits.rate_limit_history,
        "Rate-limit usage of one provider per hour (opening, peak and closing percent of"
        " its limit, blocks), the current hour the last; kept 30 days",
        schemas.RateLimitHistory,
        (
            NAME,
            Param(
                "hours",
                "query",
                "integer",
                "how many hours, the current one the last",
                minimum=1,
                maximum=720,
                default=168,
            ),
        ),
        errors=(400, 404),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/logs/{log_type}",
        logs.logs,
        "Log rows from the event log, newest first",
        schemas.LogPage,
        (
            Param("log_type", "path", "string", "which log", enum=LOG_TYPES),
            hours(24),
            Param(
                "limit", "query", "integer", "rows at most", minimum=1, maximum=1000, default=100
            ),
            Param("provider", "query", "string", max_length=100, description="only this provider"),
        ),
    ),
    Endpoint(
        "GET",
        "/api/alerts",
        alerts.alerts,
        "Alerts, newest first",
        schemas.AlertList,
        (
            Param("acknowledged", "query", "boolean", "only (un)acknowledged alerts"),
            hours(24),
            Param("provider", "query", "string", max_length=100, description="only this provider"),
            Param("severity", "query", "string", "only this severity", enum=ALERT_SEVERITIES),
            Param("open", "query", "boolean", "only alerts not yet resolved"),
            Param(
                "limit", "query", "integer", "alerts at most", minimum=1, maximum=5000, default=500
            ),
        ),
        cached=True,
        links=(Link("post_acknowledge_alert", "alert_id", "$response.body#/alerts/0/id"),),
    ),
    Endpoint(
        "POST",
        "/api/alerts/{alert_id}/acknowledge",
        alerts.acknowledge_alert,
        "Acknowledge an alert (optional JSON body: note, actor)",
        schemas.Acknowledged,
        (
            Param(
                "alert_id",
                "path",
                "integer",
                "the alert's id",
                minimum=1,
                maximum=2**62,
                noun="alert",
            ),
        ),
        write=True,
        errors=(400, 401, 403, 404, 409),
    ),
    Endpoint(
        "GET",
        "/api/incidents",
        incidents.incidents,
        "Incidents, newest first: each one a provider's availability alerts that overlapped"
        " in time (offline, degraded, failure_rate, lagging, stale, wrong_chain, deviation),"
        " with its start, end, duration, alerts, their acknowledgements and worst severity",
        schemas.IncidentList,
        (
            Param("provider", "query", "string", max_length=100, description="only this provider"),
            Param("open", "query", "boolean", "only open incidents (true) or closed ones (false)"),
            Param(
                "from",
                "query",
                "string",
                "only incidents open at some time from this one on: unix seconds or ISO 8601"
                " (2026-11-25T10:00:00Z)",
                moment=True,
            ),
            Param(
                "to",
                "query",
                "string",
                "only incidents that started by this time: unix seconds or ISO 8601",
                moment=True,
            ),
            Param(
                "limit",
                "query",
                "integer",
                "incidents at most",
                minimum=1,
                maximum=5000,
                default=500,
            ),
        ),
        cached=True,
        links=(Link("get_incident", "incident_id", "$response.body#/incidents/0/id"),),
    ),
    Endpoint(
        "GET",
        "/api/incidents/{incident_id}",
        incidents.incident,
        "One incident, by its id",
        IncidentView,
        (
            Param(
                "incident_id",
                "path",
                "integer",
                "the incident's id",
                minimum=1,
                maximum=2**62,
                noun="incident",
            ),
        ),
        errors=(400, 404),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/maintenance",
        maintenance.maintenance_windows,
        "Maintenance windows: upcoming, active, past and cancelled, each with its source"
        " (file or api), what it covers and its next start and end",
        schemas.MaintenanceList,
        links=(Link("delete_cancel_window", "window_id", "$response.body#/windows/0/id"),),
    ),
    Endpoint(
        "POST",
        "/api/maintenance",
        maintenance.create_window,
        "Create a maintenance window (JSON body: name, providers and/or categories, and"
        " cron + duration or start + end in ISO 8601); answers 201 with the window and its id",
        schemas.MaintenanceWindowView,
        body=schemas.MaintenanceWindowBody,
        ok_status=201,
        ok_description="Created: the window, with the id to cancel it by",
        write=True,
        errors=(400, 401, 403),
        links=(Link("delete_cancel_window", "window_id", "$response.body#/id"),),
    ),
    Endpoint(
        "DELETE",
        "/api/maintenance/{window_id}",
        maintenance.cancel_window,
        "Cancel a maintenance window created over the API (one from the config file: 409)",
        schemas.MaintenanceWindowView,
        (Param("window_id", "path", "string", "the window's id", max_length=200),),
        write=True,
        errors=(401, 403, 404, 409),
    ),
    Endpoint(
        "GET",
        "/api/notifications",
        notifications.notifications,
        "Alert notifications per channel: delivered, failed, pending, last error",
        schemas.NotificationsView,
    ),
    Endpoint(
        "GET",
        "/api/scheduler/status",
        scheduler.scheduler_status,
        "Scheduled jobs",
        schemas.SchedulerStatus,
        links=(Link("post_trigger_job", "job_id", "$response.body#/jobs/0/id"),),
    ),
    Endpoint(
        "POST",
        "/api/scheduler/trigger/{job_id}",
        scheduler.trigger_job,
        "Run a job now",
        schemas.Triggered,
        (Param("job_id", "path", "string", "the job's id"),),
        write=True,
        errors=(401, 403, 404),
    ),
    Endpoint(
        "POST",
        "/api/config/reload",
        config.reload_config,
        "Read the config file again and apply the difference: providers added, removed"
        " or changed, and the [monitoring] thresholds. An invalid file changes nothing"
        " (422 lists its errors); keys that need a restart are named in needs_restart",
        schemas.ConfigReloaded,
        write=True,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "GET",
        "/api/database/stats",
        database.database_stats,
        "Database statistics",
        schemas.DatabaseStats,
    ),
    Endpoint(
        "GET",
        "/api/database/health",
        database.database_health,
        "Database health",
        schemas.DatabaseHealth,
        errors=(),
        unhealthy_status=503,
    ),
    Endpoint(
        "GET",
        "/api/analytics/failures",
        analytics.failure_analytics,
        "Failure analysis",
        schemas.FailureAnalysisView,
        (hours(24),),
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/config/stats",
        analytics.config_stats,
        "Configuration statistics",
        schemas.ConfigStats,
        cached=True,
    ),
    Endpoint(
        "GET",
        "/api/events",
        events.events,
        "The event log, oldest first, with a cursor",
        schemas.EventPage,
        (
            Param(
                "after",
                "query",
                "integer",
                "events after this position",
                minimum=0,
                maximum=2**62,
                default=0,
            ),
            Param(
                "limit", "query", "integer", "events at most", minimum=1, maximum=1000, default=100
            ),
            Param(
                "type",
                "query",
                "string",
                "only this event type",
                enum=tuple(EVENT_TYPES),
                max_length=60,
            ),
            Param("stream", "query", "string", max_length=200, description="only this stream"),
        ),
    ),
    Endpoint(
        "GET",
        "/api/audit/verify",
        audit.audit_verify,
        "The hash chain as verified so far: at start-up, then each commit as it lands"
        " (no walk per request)",
        schemas.ChainStatus,
    ),
    Endpoint(
        "POST",
        "/api/audit/verify",
        audit.audit_verify_afresh,
        "Walk the whole hash chain again, in a child process; a request while one walk"
        " runs waits for its result",
        schemas.ChainStatus,
        write=True,
        errors=(401, 403, 503),
    ),
    badge("/badge/{name}/status.svg", badges.status_badge, "A provider's status as a badge"),
    badge(
        "/badge/{name}/uptime/{window}.svg",
        badges.uptime_badge,
        "A provider's uptime over 24 h, 7 d or 30 d as a badge",
        Param("window", "path", "string", "the window", enum=tuple(badges.UPTIME_WINDOWS)),
    ),
    badge(
        "/badge/{name}/latency.svg",
        badges.latency_badge,
        "A provider's p95 latency over 24 h as a badge",
    ),
    Endpoint(
        "GET",
        "/metrics",
        prometheus.metrics,
        "Prometheus metrics (text format)",
        None,
        media_type="text/plain",
        cached=True,
    ),
    # The API's shape, no data: open, so that a client can be generated without a token.
    Endpoint("GET", "/openapi.json", openapi.spec, "This document", None, open_to=anyone),
    Endpoint("GET", "/docs", openapi.docs, "API documentation (HTML)", None, open_to=anyone),
    Endpoint(
        "GET",
        "/status",
        status_page.status_page,
        "The public status page: each listed provider's state in plain words, rendered on"
        " the server (no token, nothing internal; [status_page] enabled = false: 404)",
        None,
        media_type="text/html",
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/status/data.json",
        status_page.status_data,
        "What the public status page shows, for its script to update it in place",
        schemas.PublicStatus,
        errors=(404,),
    ),
)


def add_routes(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    """Route `endpoints` (REST's `ENDPOINTS` and the live feed's, as the composition root
    puts them together) and document them."""
    app[RESPONSE_CACHE] = {}
    for endpoint in endpoints:
        # The declaration is the check: parameters parsed and validated, writes
        # refused to whoever may not write and reads to whoever may not read (before
        # any parameter is looked at, and in front of the cache of answers).
        handler = parsed(endpoint.handler, endpoint.params) if endpoint.params else endpoint.handler
        handler = cached(handler, app[RESPONSE_CACHE]) if endpoint.cached else handler
        check: Check
        if endpoint.websocket:
            check = feed_check
        elif endpoint.write:
            check = write_check
        else:
            check = read_check(endpoint.exemption)
        app.router.add_route(endpoint.method, endpoint.path, guarded(handler, check))
    app[OPENAPI_DOCUMENT] = openapi.build(endpoints)
    dashboard.add_routes(app)  # its files under /static/: not API, not in the document
    # Last, so that it matches only what no route above does.
    unrouted_targets = _EveryTarget("/")
    app.router.register_resource(unrouted_targets)
    unrouted_targets.add_route("*", guarded(unrouted))


class _EveryTarget(web.PlainResource):
    """A resource that matches every request target with a path. A path pattern would
    not: `.*` stops at a decoded newline (`/a%0Ab`), and `OPTIONS *` is no path, so
    those requests would get aiohttp's plain 404 past the limiter. (A CONNECT's
    `host:port` target reaches no resource at all: aiohttp answers its plain 404.)"""

    def _match(self, path: str) -> dict[str, str]:
        return {}


async def unrouted(request: web.Request) -> web.StreamResponse:
    """Every request that no route takes, limited and answered as a problem like the
    rest: a 405 naming the methods the path has, or a 404 when it has none."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
