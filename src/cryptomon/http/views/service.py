"""The service itself: `/info`, `/health`, `/livez` and `/readyz`."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from cryptomon import __version__
from cryptomon.http.keys import (
    HUB,
    MONITOR,
    RELOADER,
    SETTINGS,
    STARTED_AT,
)
from cryptomon.http.schemas import (
    Component,
    ComponentProblem,
    ConfigComponent,
    Health,
    HealthComponents,
    HealthMetrics,
    Liveness,
    Readiness,
    ReadModelsComponent,
    SchedulerComponent,
    ServiceInfo,
    WebSocketComponent,
)
from cryptomon.http.views import HOUR, log_of, models_of, respond, rounded
from cryptomon.http.views.database import database_component
from cryptomon.isotime import iso_time


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
            event_position=log_of(request).head,
            providers=len(app[MONITOR].providers),
            dashboard="/",
            docs="/docs",
            endpoints=endpoints,
        )
    )


# What /readyz checks: the parts without which this instance can't serve and record.
# A broken history turns /health 503 (a person must look) but not /readyz: every
# instance reads the same log, so sending traffic elsewhere would mend nothing.
READINESS: tuple[Component, ...] = ("database", "read_models", "scheduler")


def _problems(request: web.Request) -> list[ComponentProblem]:
    """cryptomon's own components that are failing, and why. The monitored providers are
    never among them: their outages are what this service reports, and a probe that
    restarted it for them would blind it exactly when it is needed."""
    store = log_of(request)
    models = models_of(request)
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
    models = models_of(request)
    monitor = request.app[MONITOR]
    hub = request.app[HUB]
    summary = models.projections.providers.summary()
    problems = _problems(request)
    now = time.time()
    window = models.projections.metrics.window(None, now - HOUR, now)
    lag = log_of(request).head - models.position
    body = Health(
        status="unhealthy" if problems else "healthy",
        timestamp=iso_time(now),
        components=HealthComponents(
            database=database_component(request),
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
            config=_config_component(request),
        ),
        metrics=HealthMetrics(
            probes_last_hour=window.count,
            failures_last_hour=window.failures,
            avg_response_time_ms=rounded(window.avg_latency_ms),
            open_alerts=len(models.projections.alerts.query(open_only=True)),
            probes_lost=monitor.counters.lost,
            read_model_lag=lag,
        ),
        problems=problems,
    )
    return respond(body, status=503 if problems else 200)


def _config_component(request: web.Request) -> ConfigComponent:
    reloader = request.app[RELOADER]
    conflicts = list(request.app[MONITOR].conflicts.values())
    return ConfigComponent(
        status="error" if reloader.errors else "conflict" if conflicts else "ok",
        source=request.app[SETTINGS].config.source,
        errors=reloader.errors,
        last_reload_attempt=iso_time(reloader.last_attempt),
        last_reload_applied=iso_time(reloader.last_applied),
        conflicts=conflicts,
    )


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
