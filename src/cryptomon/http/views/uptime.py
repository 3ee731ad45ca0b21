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
from cryptomon.http.schemas import ProviderUptimeDays, UptimeDaily, UptimeDay
from cryptomon.http.views import models_of, respond
from cryptomon.projections import Projections
from cryptomon.projections.metrics import DAY


def _date(midnight: int) -> str:
    return datetime.fromtimestamp(midnight, UTC).strftime("%Y-%m-%d")


def _percent(probes: int, failures: int) -> float | None:
    return round((probes - failures) / probes * 100, 2) if probes else None


def uptime_days(
    projections: Projections, providers: list[str], now: float, days: int
) -> UptimeDaily:
    """The last `days` UTC days of each of `providers`, today the last."""
    first = int(now // DAY * DAY) - (days - 1) * DAY
    dates = [_date(first + i * DAY) for i in range(days)]
    metrics = projections.metrics
    bars = []
    for name in providers:
        counts = metrics.daily(name, first, days, "health")
        cells = [
            UptimeDay(
                date=date,
                uptime=_percent(day.probes, day.failures),
                probes=day.probes,
                failures=day.failures,
            )
            for date, day in zip(dates, counts, strict=True)
        ]
        probes = sum(day.probes for day in counts)
        failures = sum(day.failures for day in counts)
        bars.append(
            ProviderUptimeDays(
                provider=name,
                uptime=_percent(probes, failures),
                probes=probes,
                failures=failures,
                days=cells,
            )
        )
    return UptimeDaily(
        days=days, first_day=dates[0], last_day=dates[-1], count=len(bars), providers=bars
    )


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
