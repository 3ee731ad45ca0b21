"""`/api/rate-limits`: every provider's rate-limit usage, one's, and one's per hour."""

from __future__ import annotations

import time

from aiohttp import web

from cryptomon.http.errors import NotFound
from cryptomon.http.keys import ARGUMENTS
from cryptomon.http.schemas import (
    RateLimitHistory,
    RateLimitList,
    RateLimitView,
    UsageHourView,
)
from cryptomon.http.views import HOUR, models_of, respond
from cryptomon.http.views.providers import provider_state
from cryptomon.isotime import iso_time
from cryptomon.projections.notices import limit_type
from cryptomon.projections.rate_limits import RateLimitState


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
    projections = models_of(request).projections
    views = [
        _rate_limit_view(s, now)
        for s in projections.rate_limits.all()
        if not projections.providers.is_removed(s.provider)  # kept, read by name
    ]
    return respond(RateLimitList(count=len(views), rate_limits=views))


async def rate_limit(request: web.Request) -> web.Response:
    state = provider_state(request)
    limit = models_of(request).projections.rate_limits.get(state.name)
    if limit is None:
        raise NotFound("rate-limit", f"{state.name!r} has no known rate limit")
    return respond(_rate_limit_view(limit, time.time()))


async def rate_limit_history(request: web.Request) -> web.Response:
    state = provider_state(request)
    hours = request[ARGUMENTS].integer("hours")
    projections = models_of(request).projections
    limit = projections.rate_limits.get(state.name)
    if limit is None:
        raise NotFound("rate-limit", f"{state.name!r} has no known rate limit")
    now = time.time()
    last = now // HOUR * HOUR
    first = last - (hours - 1) * HOUR
    points = []
    for index, found in enumerate(projections.rate_limits.hours(state.name, first, last)):
        start = first + index * HOUR
        if found is None:
            point = UsageHourView(
                hour=iso_time(start),
                opening_percentage=None,
                peak_percentage=None,
                closing_percentage=None,
                blocked=False,
                reported=False,
            )
        else:
            usage, reported = found
            point = UsageHourView(
                hour=iso_time(start),
                opening_percentage=usage.opening,
                peak_percentage=usage.peak,
                closing_percentage=usage.closing,
                blocked=usage.blocked,
                reported=reported,
            )
        points.append(point)
    return respond(
        RateLimitHistory(
            provider=state.name,
            hours=hours,
            step_seconds=int(HOUR),
            limit_type=limit_type(limit.window_seconds),
            limit_value=limit.limit,
            points=points,
        )
    )
