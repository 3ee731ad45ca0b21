"""`/api/uptime/daily`: each provider's health-probe uptime per UTC day, the 90-day bars
of the provider page (and of a status page), answered for every provider at once.

A day's uptime is the share of its health probes that succeeded, from the metrics
rollups (day buckets, and the hours and minutes of the last days): never a scan of the
log. A day without probes has none (`uptime: null`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web

from cryptomon.http.errors import NotFound
from cryptomon.http.keys import ARGUMENTS
from cryptomon.http.schemas import ProviderUptimeDays, UptimeDaily
from cryptomon.http.views import models_of, respond
from cryptomon.projections import Projections
from cryptomon.projections.metrics import DAY


def _date(midnight: int) -> str:
    return datetime.fromtimestamp(midnight, UTC).strftime("%Y-%m-%d")


def uptime_days(
    projections: Projections, providers: list[str], now: float, days: int
) -> UptimeDaily:
    """The last `days` UTC days of each of `providers`, today the last."""
    first = int(now // DAY * DAY) - (days - 1) * DAY
    daily = projections.metrics.daily
    bars = []
    for name in providers:
        probes, failures = daily(name, first, days, "health")
        total, failed = sum(probes), sum(failures)
        bars.append(
            ProviderUptimeDays(
                provider=name,
                uptime=round((total - failed) / total * 100, 2) if total else None,
                probes=total,
                failures=failed,
                # Most days fail nothing: 100 without a division and a rounding.
                uptime_by_day=[
                    (round((count - bad) / count * 100, 2) if bad else 100.0) if count else None
                    for count, bad in zip(probes, failures, strict=True)
                ],
                probes_by_day=probes,
                failures_by_day=failures,
            )
        )
    dates = [_date(first + i * DAY) for i in range(days)]
    return UptimeDaily(days=days, dates=dates, count=len(bars), providers=bars)


async def uptime_daily(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    projections = models_of(request).projections
    name = args.text("provider")
    if name is None:
        names = [state.name for state in projections.providers.all()]
    else:
        state = projections.providers.get(name)
        if state is None:
            raise NotFound("provider", f"no provider named {name[:100]!r}; see /api/providers")
        names = [state.name]
    return respond(uptime_days(projections, names, time.time(), args.integer("days")))
