"""`/api/status`: the system's status and its metrics history."""

from __future__ import annotations

import time

from aiohttp import web

from cryptomon.http.keys import (
    ARGUMENTS,
)
from cryptomon.http.schemas import (
    MetricsPoint,
    SystemMetrics,
    SystemStatus,
)
from cryptomon.http.views import HOUR, models_of, respond, rounded, series_step
from cryptomon.isotime import iso_time


async def status(request: web.Request) -> web.Response:
    projections = models_of(request).projections
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
            paused=summary.paused,
            avg_response_time_ms=rounded(window.avg_latency_ms),
            last_update=iso_time(last_update),
            system_health=summary.system_health,
            open_alerts=len(projections.alerts.query(open_only=True)),
            event_position=projections.position,
        )
    )


async def status_metrics(request: web.Request) -> web.Response:
    hours = request[ARGUMENTS].number("hours")
    step = series_step(hours)
    now = time.time()
    metrics = models_of(request).projections.metrics
    since = now - hours * HOUR
    points = [
        MetricsPoint(
            timestamp=iso_time(point.start),
            probes=point.probes,
            failures=point.failures,
            avg_response_time_ms=rounded(point.avg_latency_ms),
            p50_ms=rounded(point.p50),
            p95_ms=rounded(point.p95),
        )
        for point in metrics.series(None, since, now, step)
    ]
    window = metrics.window(None, since, now)
    return respond(
        SystemMetrics(
            hours=hours,
            step_seconds=step,
            points=points,
            uptime=rounded(None if window.uptime is None else window.uptime * 100, 2),
            p50_ms=rounded(window.p50),
            p95_ms=rounded(window.p95),
            p99_ms=rounded(window.p99),
        )
    )
