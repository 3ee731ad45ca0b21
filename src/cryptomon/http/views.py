"""REST handlers: the seed's endpoints at the seed's paths, plus the event log.

Handlers read the in-memory read models (no heavy work per request) or, for
logs and the event log, one indexed page of the store. Bad input raises an
error that the problem middleware turns into a 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from aiohttp import web

from cryptomon import __version__
from cryptomon.config import ProviderConfig, mask_key
from cryptomon.events.archive import log_segments
from cryptomon.events.log import ConcurrencyError, EventLog
from cryptomon.events.types import (
    EventMetadata,
    ProbeRecorded,
    RecordedEvent,
)
from cryptomon.http.errors import InvalidParameter, NotFound
from cryptomon.http.keys import (
    ARGUMENTS,
    HUB,
    MONITOR,
    READ_MODELS,
    RESPONSE_CACHE,
    SETTINGS,
    STARTED_AT,
    STORE,
    WRITER,
)
from cryptomon.http.schemas import (
    AcknowledgeBody,
    Acknowledged,
    AlertList,
    CertificateView,
    Component,
    ComponentProblem,
    ConditionView,
    ConfigStats,
    DatabaseComponent,
    DatabaseHealth,
    DatabaseStats,
    ErrorSampleView,
    EventPage,
    EventView,
    FailureAnalysisView,
    Health,
    HealthComponents,
    HealthMetrics,
    JobView,
    LastProbe,
    LatencyStats,
    Liveness,
    LogPage,
    MetricsPoint,
    ObservationView,
    ProviderList,
    ProviderSeries,
    ProviderStats,
    ProviderView,
    RateLimitList,
    RateLimitView,
    Readiness,
    ReadModelsComponent,
    SchedulerComponent,
    SchedulerStatus,
    ServiceInfo,
    SystemMetrics,
    SystemStatus,
    Triggered,
    WebSocketComponent,
)
from cryptomon.isotime import iso_time
from cryptomon.monitor import provider_stream
from cryptomon.projections import AlreadyAcknowledgedError, WindowStats
from cryptomon.projections.notices import limit_type, log_entries
from cryptomon.projections.providers import ProviderState
from cryptomon.projections.rate_limits import RateLimitState
from cryptomon.projections.views import AlertView
from cryptomon.readmodels import ReadModels

HOUR = 3600.0
DAY = 24 * HOUR
LOG_LABELS = {
    "connection": ["health:ok", "health:fail"],
    "failure": ["health:fail", "collection:fail"],
    "collection": ["collection:ok", "collection:fail"],
}
# Reads waiting for the read models to show a write they just made.
WRITE_VISIBLE_SECONDS = 5.0

_encoder = msgspec.json.Encoder()


def respond(body: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def _models(request: web.Request) -> ReadModels:
    return request.app[READ_MODELS]


def _store(request: web.Request) -> EventLog:
    return request.app[STORE]


# ---- writes: reading them back -----------------------------------------------


async def _visible(request: web.Request, position: int) -> None:
    """After a write: wait (a little) until the read models show it, and drop
    cached answers, so the writer reads its own write."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WRITE_VISIBLE_SECONDS):
            await _models(request).wait_for(position)
    request.app[RESPONSE_CACHE].clear()


async def _body(request: web.Request) -> AcknowledgeBody:
    raw = await request.read()
    if not raw.strip():
        return AcknowledgeBody()
    try:
        body = msgspec.json.decode(raw, type=AcknowledgeBody)
    except msgspec.ValidationError as exc:
        raise InvalidParameter("body", f"the JSON body is not valid: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidParameter("body", "the body is not JSON") from None
    for name in ("note", "actor"):
        value = getattr(body, name)
        if value is not None and len(value) > 1000:
            raise InvalidParameter(name, f"{name} must be at most 1000 characters")
        if value is not None and "\x00" in value:
            # No database text column can hold it (PostgreSQL refuses it outright).
            raise InvalidParameter(name, f"{name} must not contain a NUL character")
    return body


# ---- service ------------------------------------------------------------------


async def info(request: web.Request) -> web.Response:
    app = request.app
    started = app[STARTED_AT]
    endpoints = {
        "health": "/health",
        "providers": "/api/providers",
        "status": "/api/status",
        "rate_limits": "/api/rate-limits",
        "logs": "/api/logs/{log_type}",
        "alerts": "/api/alerts",
        "scheduler": "/api/scheduler/status",
        "database": "/api/database/stats",
        "analytics": "/api/analytics/failures",
        "events": "/api/events",
        "metrics": "/metrics",
        "websocket": "/ws/live",
        "openapi": "/openapi.json",
    }
    return respond(
        ServiceInfo(
            name="cryptomon",
            version=__version__,
            description="Monitor for the third-party APIs crypto products depend on",
            started_at=iso_time(started),
            uptime_seconds=round(time.time() - started, 3),
            event_position=_store(request).head,
            providers=len(app[SETTINGS].config.providers),
            dashboard="/",
            docs="/docs",
            endpoints=endpoints,
        )
    )


def _database_component(request: web.Request) -> DatabaseComponent:
    store = _store(request)
    models = _models(request)
    size = store.size_bytes()
    failing = store.failed_appends > 0 and store.last_write_failed
    return DatabaseComponent(
        status="unhealthy" if failing or models.history == "broken" else "healthy",
        path=store.location,
        size_mb=round(size / 1e6, 3),
        event_position=store.head,
        failed_appends=store.failed_appends,
        history=models.history,
        error=store.last_write_error if failing else models.history_error,
    )


# What /readyz checks: the parts without which this instance can't serve and record.
# A broken history turns /health 503 (a person must look) but not /readyz: every
# instance reads the same log, so sending traffic elsewhere would mend nothing.
READINESS: tuple[Component, ...] = ("database", "read_models", "scheduler")


def _problems(request: web.Request) -> list[ComponentProblem]:
    """cryptomon's own components that are failing, and why. The monitored providers are
    never among them: their outages are what this service reports, and a probe that
    restarted it for them would blind it exactly when it is needed."""
    store = _store(request)
    models = _models(request)
    problems = []
    if store.failed_appends > 0 and store.last_write_failed:
        detail = store.last_write_error or "the last append failed"
        problems.append(ComponentProblem(component="database", detail=detail))
    if models.history == "broken":
        detail = models.history_error or "the event log's hash chain is broken"
        problems.append(ComponentProblem(component="history", detail=detail))
    if not models.following:
        detail = f"the read models stopped following the log at position {models.position}"
        problems.append(ComponentProblem(component="read_models", detail=detail))
    if request.app[SETTINGS].probing and not request.app[MONITOR].scheduler.running:
        problems.append(
            ComponentProblem(component="scheduler", detail="the scheduler is not running")
        )
    return problems


async def health(request: web.Request) -> web.Response:
    models = _models(request)
    monitor = request.app[MONITOR]
    hub = request.app[HUB]
    summary = models.projections.providers.summary()
    problems = _problems(request)
    now = time.time()
    window = models.projections.metrics.window(None, now - HOUR, now)
    lag = _store(request).head - models.position
    body = Health(
        status="unhealthy" if problems else "healthy",
        timestamp=iso_time(now),
        components=HealthComponents(
            database=_database_component(request),
            scheduler=SchedulerComponent(
                status="running" if monitor.scheduler.running else "stopped",
                active_jobs=sum(job.running for job in monitor.scheduler.status()),
                providers_probed=monitor.providers_probed if monitor.scheduler.running else 0,
            ),
            websocket=WebSocketComponent(
                status="running" if hub.running else "stopped",
                active_connections=len(hub.clients),
            ),
            read_models=ReadModelsComponent(
                status="following" if models.following else "stopped",
                position=models.position,
                lag=lag,
            ),
            providers=summary,
        ),
        metrics=HealthMetrics(
            probes_last_hour=window.count,
            failures_last_hour=window.failures,
            avg_response_time_ms=_round(window.avg_latency_ms),
            open_alerts=len(models.projections.alerts.query(open_only=True)),
            probes_lost=monitor.counters.lost,
            read_model_lag=lag,
        ),
        problems=problems,
    )
    return respond(body, status=503 if problems else 200)


_ALIVE = msgspec.json.encode(Liveness(status="alive"))


async def livez(request: web.Request) -> web.Response:
    # The process and its event loop answer; nothing else is looked at, so a failing
    # database never makes an orchestrator kill a process that would recover by itself.
    return web.Response(body=_ALIVE, content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    problems = [p for p in _problems(request) if p.component in READINESS]
    body = Readiness(
        status="not_ready" if problems else "ready",
        timestamp=iso_time(time.time()),
        checked=list(READINESS),
        problems=problems,
    )
    return respond(body, status=503 if problems else 200)


# ---- providers ----------------------------------------------------------------


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _last_probe(probe: ProbeRecorded | None) -> LastProbe | None:
    if probe is None:
        return None
    return LastProbe(
        at=iso_time(probe.started_at),
        outcome=probe.outcome,
        endpoint=probe.endpoint,
        http_status=probe.http_status,
        response_time_ms=_round(probe.latency_ms),
        error_type=probe.error_kind,
        error_message=probe.error_message,
        condition=(
            ConditionView(condition=probe.condition.condition, seen=probe.condition.seen)
            if probe.condition is not None
            else None
        ),
        rpc_error_code=probe.rpc_error_code,
    )


def _configured(request: web.Request, name: str) -> ProviderConfig | None:
    return request.app[SETTINGS].providers_by_name.get(name)


def _provider_view(request: web.Request, state: ProviderState, now: float) -> ProviderView:
    projections = _models(request).projections
    day = projections.metrics.window(state.name, now - DAY, now, "health")
    configured = _configured(request, state.name)
    key = configured.api_key(request.app[SETTINGS].environ) if configured else None
    limit = projections.rate_limits.get(state.name)
    last = state.last_probe
    return ProviderView(
        name=state.name,
        category=state.category,
        base_url=state.base_url,
        status=state.status,
        response_time_ms=_round(last.latency_ms) if last is not None else None,
        p95_ms_24h=_round(day.p95),
        uptime_24h=_round(None if day.uptime is None else day.uptime * 100, 2),
        consecutive_failures=state.consecutive_failures,
        last_check=iso_time(last.started_at) if last is not None else None,
        last_status_change=iso_time(state.last_status_change),
        last_probe=_last_probe(last),
        last_error=_last_probe(state.last_error),
        api_key=mask_key(key) if key else None,
        rate_limit_percentage=limit.percentage if limit is not None else None,
        certificate=_certificate(state.certificate_not_after, now),
        observations={
            name: ObservationView(value=seen.value, at=iso_time(seen.at), endpoint=seen.endpoint)
            for name, seen in state.observations.items()
        },
    )


def _certificate(not_after: float | None, now: float) -> CertificateView | None:
    if not_after is None:
        return None
    return CertificateView(
        expires_at=iso_time(not_after), days_left=round((not_after - now) / DAY, 2)
    )


def _provider_state(request: web.Request) -> ProviderState:
    name = request[ARGUMENTS].path("name")
    state = _models(request).projections.providers.get(name)
    if state is None:
        raise NotFound("provider", f"no provider named {name[:100]!r}; see /api/providers")
    return state


async def providers(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    category = args.text("category")
    status = args.text("status")
    now = time.time()
    views = [
        _provider_view(request, state, now)
        for state in _models(request).projections.providers.all()
        if (category is None or state.category == category)
        and (status is None or state.status == status)
    ]
    return respond(ProviderList(count=len(views), providers=views))


async def provider(request: web.Request) -> web.Response:
    return respond(_provider_view(request, _provider_state(request), time.time()))


def _latency_stats(stats: WindowStats) -> LatencyStats:
    return LatencyStats(
        total_attempts=stats.count,
        successful=stats.successes,
        failed=stats.by_outcome.get("failed", 0),
        timeout=stats.by_outcome.get("timeout", 0),
        rate_limited=stats.by_outcome.get("rate_limited", 0),
        success_rate=_round(None if stats.uptime is None else stats.uptime * 100, 2),
        uptime=_round(None if stats.uptime is None else stats.uptime * 100, 2),
        avg_response_time_ms=_round(stats.avg_latency_ms),
        p50_ms=_round(stats.p50),
        p95_ms=_round(stats.p95),
        p99_ms=_round(stats.p99),
    )


async def provider_stats(request: web.Request) -> web.Response:
    state = _provider_state(request)
    hours = request[ARGUMENTS].number("hours")
    now = time.time()
    metrics = _models(request).projections.metrics
    health_window = metrics.window(state.name, now - hours * HOUR, now, "health")
    collection_window = metrics.window(state.name, now - hours * HOUR, now, "collection")

    def uptime(seconds: float) -> float | None:
        value = metrics.window(state.name, now - seconds, now, "health").uptime
        return _round(None if value is None else value * 100, 2)

    return respond(
        ProviderStats(
            provider_name=state.name,
            time_window_hours=hours,
            connection_stats=_latency_stats(health_window),
            data_collection_stats=_latency_stats(collection_window),
            failure_count=health_window.failures + collection_window.failures,
            uptime_1h=uptime(HOUR),
            uptime_24h=uptime(DAY),
            uptime_7d=uptime(7 * DAY),
            uptime_30d=uptime(30 * DAY),
        )
    )


async def provider_series(request: web.Request) -> web.Response:
    state = _provider_state(request)
    hours = request[ARGUMENTS].number("hours")
    step = _series_step(hours)
    now = time.time()
    # Whole steps, so each point is whole minute (hour, day) buckets.
    since = (now - hours * HOUR) // step * step
    points = [
        MetricsPoint(
            timestamp=iso_time(point.start),
            probes=point.probes,
            failures=point.failures,
            avg_response_time_ms=_round(point.avg_latency_ms),
        )
        for point in _models(request).projections.metrics.series(
            state.name, since, now, step, "health"
        )
    ]
    return respond(
        ProviderSeries(provider=state.name, hours=hours, step_seconds=step, points=points)
    )


def _series_step(hours: float) -> int:
    return 60 if hours <= 6 else 3600 if hours <= 24 * 7 else 86_400


# ---- status -------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    projections = _models(request).projections
    summary = projections.providers.summary()
    now = time.time()
    window = projections.metrics.window(None, now - HOUR, now, "health")
    last_update = max(
        (p.last_probe.started_at for p in projections.providers.all() if p.last_probe),
        default=None,
    )
    return respond(
        SystemStatus(
            total_apis=summary.total,
            online=summary.online,
            degraded=summary.degraded,
            offline=summary.offline,
            rate_limited=summary.rate_limited,
            maintenance=summary.maintenance,
            unconfigured=summary.unconfigured,
            unknown=summary.unknown,
            avg_response_time_ms=_round(window.avg_latency_ms),
            last_update=iso_time(last_update),
            system_health=summary.system_health,
            open_alerts=len(projections.alerts.query(open_only=True)),
            event_position=projections.position,
        )
    )


async def status_metrics(request: web.Request) -> web.Response:
    hours = request[ARGUMENTS].number("hours")
    step = _series_step(hours)
    now = time.time()
    metrics = _models(request).projections.metrics
    since = now - hours * HOUR
    points = [
        MetricsPoint(
            timestamp=iso_time(point.start),
            probes=point.probes,
            failures=point.failures,
            avg_response_time_ms=_round(point.avg_latency_ms),
        )
        for point in metrics.series(None, since, now, step)
    ]
    window = metrics.window(None, since, now)
    return respond(
        SystemMetrics(
            hours=hours,
            step_seconds=step,
            points=points,
            uptime=_round(None if window.uptime is None else window.uptime * 100, 2),
            p50_ms=_round(window.p50),
            p95_ms=_round(window.p95),
            p99_ms=_round(window.p99),
        )
    )


# ---- rate limits --------------------------------------------------------------


def _rate_limit_view(state: RateLimitState, now: float) -> RateLimitView:
    blocked = state.blocked_until is not None and state.blocked_until > now
    return RateLimitView(
        provider=state.provider,
        limit_type=limit_type(state.window_seconds),
        limit_value=state.limit,
        current_usage=state.used,
        percentage=state.percentage,
        reset_time=iso_time(state.reset_at),
        reset_in_seconds=(
            None if state.reset_at is None else round(max(0.0, state.reset_at - now), 1)
        ),
        blocked_until=iso_time(state.blocked_until) if blocked else None,
        status="blocked" if blocked else state.status,
        updated_at=iso_time(state.updated_at),
    )


async def rate_limits(request: web.Request) -> web.Response:
    now = time.time()
    views = [_rate_limit_view(s, now) for s in _models(request).projections.rate_limits.all()]
    return respond(RateLimitList(count=len(views), rate_limits=views))


async def rate_limit(request: web.Request) -> web.Response:
    state = _provider_state(request)
    limit = _models(request).projections.rate_limits.get(state.name)
    if limit is None:
        raise NotFound("rate-limit", f"{state.name!r} has no known rate limit")
    return respond(_rate_limit_view(limit, time.time()))


# ---- logs ---------------------------------------------------------------------


async def logs(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    log_type = args.path("log_type")
    hours = args.number("hours")
    limit = args.integer("limit")
    provider = args.text("provider")
    since = time.time() - hours * HOUR
    store = _store(request)
    # A provider's probes and rate-limit changes are its stream's events.
    stream = provider_stream(provider) if provider is not None else None
    if provider is not None and _models(request).projections.providers.get(provider) is None:
        found = []  # nobody by that name: no index walk over everyone else's rows
    elif log_type == "rate_limit":
        found = await store.read_by_type(
            ["RateLimitChanged"], since=since, limit=limit, stream=stream
        )
    else:
        found = await store.read_by_label(
            LOG_LABELS[log_type], since=since, limit=limit, stream=stream
        )
    rows = [_log_row(log_type, recorded) for recorded in found]
    return respond(LogPage(log_type=log_type, hours=hours, count=len(rows), logs=rows))


def _log_row(log_type: str, recorded: RecordedEvent) -> dict[str, Any]:
    for entry in log_entries(recorded):
        if entry.log_type == log_type:
            return {"position": recorded.position, **entry.data}
    return {"position": recorded.position}


# ---- alerts -------------------------------------------------------------------


async def alerts(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    acknowledged = args.boolean("acknowledged")
    hours = args.number("hours")
    provider = args.text("provider")
    severity = args.text("severity")
    open_only = args.boolean("open") or False
    limit = args.integer("limit")
    found = _models(request).projections.alerts.query(
        acknowledged=acknowledged,
        since=time.time() - hours * HOUR,
        provider=provider,
        severity=severity,  # type: ignore[arg-type]
        open_only=open_only,
        limit=limit,
    )
    return respond(AlertList(count=len(found), alerts=[AlertView.of(a) for a in found]))


async def acknowledge_alert(request: web.Request) -> web.Response:
    identity = request[WRITER]
    alert_id = request[ARGUMENTS].integer("alert_id")
    body = await _body(request)
    models = _models(request)
    alerts_model = models.projections.alerts
    alerts_model.check_acknowledge(alert_id)
    actor = body.actor or identity
    store = _store(request)
    stream, acknowledgement = alerts_model.acknowledgement(alert_id, actor, time.time(), body.note)
    try:
        [position] = await store.append(
            stream,
            [acknowledgement],
            # Only acknowledgements append to this stream, so an alert acknowledged
            # already has version 1 here, even while the read models lag behind the log.
            expected_version=0,
            metadata=EventMetadata(actor=actor),
        )
    except ConcurrencyError:
        # Acknowledged already: a 409, not a storage failure. Once that acknowledgement
        # is visible, the check says by whom and when; it may not have committed yet
        # (same batch), but it is at or before the head.
        await _visible(request, store.head)
        alerts_model.check_acknowledge(alert_id)
        raced = alerts_model.get(alert_id)
        assert raced is not None
        raise AlreadyAcknowledgedError(raced) from None
    await _visible(request, position)
    alert = alerts_model.get(alert_id)
    assert alert is not None
    return respond(Acknowledged(success=True, alert=AlertView.of(alert), position=position))


# ---- scheduler ----------------------------------------------------------------


async def scheduler_status(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR]
    scheduler = monitor.scheduler
    jobs = [
        JobView(
            id=job.id,
            description=job.description,
            schedule=job.schedule,
            next_run=iso_time(job.next_run),
            last_run=iso_time(job.last_run),
            last_duration_ms=_round(job.last_duration_ms),
            runs=job.runs,
            errors=job.errors,
            skipped=job.skipped,
            running=job.running,
            last_error=job.last_error,
        )
        for job in scheduler.status()
    ]
    stats = scheduler.stats
    return respond(
        SchedulerStatus(
            running=scheduler.running,
            jobs=jobs,
            probes_planned=stats.planned,
            probes_started=stats.started,
            skipped_overlapping=stats.skipped_overlap,
            skipped_late=stats.skipped_late,
            skipped_rate_limited=monitor.counters.skipped_blocked,
            probes_lost=monitor.counters.lost,
        )
    )


async def trigger_job(request: web.Request) -> web.Response:
    actor = request[WRITER]
    job_id = request[ARGUMENTS].path("job_id")
    monitor = request.app[MONITOR]
    ran = await monitor.trigger(job_id, actor)
    await _visible(request, _store(request).head)
    return respond(
        Triggered(
            success=True,
            job_id=job_id,
            tasks_run=ran,
            triggered_by=actor,
            position=_store(request).head,
        )
    )


# ---- database -----------------------------------------------------------------


async def database_stats(request: web.Request) -> web.Response:
    store = _store(request)
    counts, by_type = await store.counts()
    return respond(
        DatabaseStats(
            database_size_mb=round(store.size_bytes() / 1e6, 3),
            events=counts.get("events", 0),
            event_position=store.head,
            snapshots=counts.get("snapshots", 0),
            archived_segments=len(log_segments(store)),
            tables=counts,
            events_by_type=by_type,
        )
    )


async def database_health(request: web.Request) -> web.Response:
    store = _store(request)
    database = _database_component(request)
    body = DatabaseHealth(
        status=database.status,
        path=store.location,
        writable=not store.last_write_failed,
        size_mb=database.size_mb,
        event_position=store.head,
        read_model_position=_models(request).position,
        failed_appends=store.failed_appends,
        last_hash=store.last_hash,
        history=database.history,
        error=database.error,
    )
    return respond(body, status=200 if database.status == "healthy" else 503)


# ---- analytics ----------------------------------------------------------------


async def failure_analytics(request: web.Request) -> web.Response:
    hours = request[ARGUMENTS].number("hours")
    now = time.time()
    analysis = _models(request).projections.failures.analyze(now - hours * HOUR, now)
    monitor = request.app[MONITOR]
    return respond(
        FailureAnalysisView(
            hours=hours,
            total_failures=analysis.total_failures,
            failures_by_error_type=analysis.by_error_kind,
            failures_by_provider=analysis.by_provider,
            failures_by_hour={iso_time(h.start): h.failures for h in analysis.by_hour},
            top_failing_providers=[msgspec.to_builtins(p) for p in analysis.top_failing_providers],
            recent_errors={
                kind: ErrorSampleView(
                    at=iso_time(sample.at),
                    provider=sample.provider,
                    endpoint=sample.endpoint,
                    message=sample.message,
                    http_status=sample.http_status,
                )
                for kind, sample in analysis.recent_errors.items()
            },
            retry_statistics={
                "skipped_rate_limited": monitor.counters.skipped_blocked,
                "skipped_overlapping": monitor.scheduler.stats.skipped_overlap,
                "probes_lost": monitor.counters.lost,
            },
        )
    )


async def config_stats(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    config = settings.config
    by_category: dict[str, int] = {}
    for provider in config.providers:
        by_category[provider.category] = by_category.get(provider.category, 0) + 1
    reasons = [p.skip_reason(settings.environ) for p in config.providers]
    return respond(
        ConfigStats(
            source=config.source,
            total_providers=len(config.providers),
            probed=sum(r is None for r in reasons),
            unconfigured=sum(
                p.key_status(settings.environ) == "unconfigured" for p in config.providers
            ),
            disabled=sum(not p.enabled for p in config.providers),
            by_category=by_category,
            with_api_key=sum(p.api_key_env is not None for p in config.providers),
            api_token_configured=settings.api_token is not None,
            cors_origins=list(config.server.cors_origins),
        )
    )


# ---- the event log ------------------------------------------------------------

_payload_builtins = msgspec.to_builtins


async def events(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    after = args.integer("after")
    limit = args.integer("limit")
    event_type = args.text("type")
    stream = args.text("stream")
    store = _store(request)
    page = await store.read_filtered(after=after, limit=limit, event_type=event_type, stream=stream)
    views = [
        EventView(
            position=e.position,
            event_id=e.event_id,
            stream=e.stream,
            version=e.version,
            type=e.type,
            recorded_at=iso_time(e.recorded_at),
            correlation_id=e.metadata.correlation_id,
            causation_id=e.metadata.causation_id,
            actor=e.metadata.actor,
            hash=e.hash,
            payload=_payload_builtins(e.event),
        )
        for e in page
    ]
    next_after = page[-1].position if len(page) == limit else None
    return respond(
        EventPage(count=len(views), events=views, next_after=next_after, head=store.head)
    )
