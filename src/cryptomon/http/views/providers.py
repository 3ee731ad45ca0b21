"""`/api/providers`: each provider, its stats and its series; and defining, changing,
deleting, pausing and resuming providers over the API (writes).

A removed provider leaves the listing (unless `?removed=true` asks for it) but still
answers by name, its stats and series too, marked `removed`.

A provider's view carries its version (the position of its last configuration event)
as its ETag; a `PUT` names it in `If-Match` (428 without one, 412 when it moved on). Only
a provider defined over the API can be changed or deleted; the file's belong to the
file, and the catalogue's can be paused, resumed or deleted (disabled). A body is the
keys of a `[[providers]]` table as JSON, checked as the file's are, and never holds a
secret: keys and secret headers name their environment variables (`env:NAME`)."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import msgspec
from aiohttp import web

from cryptomon.config import BodyError, ProviderConfig, check_provider_body, mask_key
from cryptomon.events.types import (
    ProbeRecorded,
)
from cryptomon.http.errors import InvalidParameter, NotFound
from cryptomon.http.keys import (
    ARGUMENTS,
    MONITOR,
    SETTINGS,
    WRITER,
)
from cryptomon.http.schemas import (
    CertificateView,
    ConditionView,
    LastProbe,
    LatencyStats,
    MetricsPoint,
    ObservationView,
    ProviderList,
    ProviderRegion,
    ProviderSeries,
    ProviderStats,
    ProviderView,
    ProviderWindow,
)
from cryptomon.http.views import DAY, HOUR, models_of, respond, rounded, series_step, visible
from cryptomon.isotime import iso_time
from cryptomon.probing.definitions import DefinitionRefused, IfMatch
from cryptomon.projections import WindowStats
from cryptomon.projections.base import regional
from cryptomon.projections.providers import ProviderState, RegionView


def _last_probe(probe: ProbeRecorded | None) -> LastProbe | None:
    if probe is None:
        return None
    return LastProbe(
        at=iso_time(probe.started_at),
        outcome=probe.outcome,
        endpoint=probe.endpoint,
        http_status=probe.http_status,
        response_time_ms=rounded(probe.latency_ms),
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
    return request.app[MONITOR].providers.get(name)


def _provider_view(request: web.Request, state: ProviderState, now: float) -> ProviderView:
    projections = models_of(request).projections
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
        response_time_ms=rounded(last.latency_ms) if last is not None else None,
        p95_ms_24h=rounded(day.p95),
        uptime_24h=rounded(None if day.uptime is None else day.uptime * 100, 2),
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
        judgements=dict(state.judged),
        maintenance_window=(
            None
            if state.window is None
            else ProviderWindow(
                id=state.window,
                name=state.window_name or "",
                ends_at=iso_time(state.window_ends_at),
            )
        ),
        removed=state.removed,
        removed_at=iso_time(state.removed_at),
        source=state.source,
        version=state.config_position,
        definition=state.definition,
        paused_by=state.paused_by,
        paused_at=iso_time(state.paused_at),
        regions=_regions(state.regions) if state.regions else {},
        status_regions=list(state.status_regions),
    )


def _regions(regions: dict[str, RegionView]) -> dict[str, ProviderRegion]:
    """Each region's view of a provider, by region name in order."""
    return {
        name: ProviderRegion(
            status=view.probe_status,
            details=view.details,
            last_probe_at=iso_time(view.last_probe_at),
            last_status_change=iso_time(view.last_status_change),
            consecutive_failures=view.consecutive_failures,
            lost=view.lost_at is not None,
            lost_at=iso_time(view.lost_at),
        )
        for name, view in sorted(regions.items())
    }


def _certificate(not_after: float | None, now: float) -> CertificateView | None:
    if not_after is None:
        return None
    return CertificateView(
        expires_at=iso_time(not_after), days_left=round((not_after - now) / DAY, 2)
    )


def provider_state(request: web.Request) -> ProviderState:
    name = request[ARGUMENTS].path("name")
    state = models_of(request).projections.providers.get(name)
    if state is None:
        raise NotFound("provider", f"no provider named {name[:100]!r}; see /api/providers")
    return state


async def providers(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    category = args.text("category")
    status = args.text("status")
    removed = args.boolean("removed") is True
    now = time.time()
    views = [
        _provider_view(request, state, now)
        for state in models_of(request).projections.providers.all(removed=removed)
        if (category is None or state.category == category)
        and (status is None or state.status == status)
    ]
    return respond(ProviderList(count=len(views), providers=views))


async def provider(request: web.Request) -> web.Response:
    return _with_etag(request, provider_state(request))


def _with_etag(request: web.Request, state: ProviderState, status: int = 200) -> web.Response:
    response = respond(_provider_view(request, state, time.time()), status=status)
    response.headers["ETag"] = f'"{state.config_position}"'
    return response


_ENTITY_TAG = re.compile(r'(W/)?"([0-9]{1,19})"')


async def _definition(
    request: web.Request, name: str | None = None
) -> tuple[ProviderConfig, dict[str, Any]]:
    """The body as a provider, checked as the file's are (400 naming the key), and the
    body itself: the definition recorded. `name`: the path's, which the body may leave out
    but not contradict. The whole body is read (the app refuses one over its 64 KiB
    `client_max_size` with a 413)."""
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        raise InvalidParameter("body", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidParameter("body", "expected a JSON object: the keys of a [[providers]] table")
    if name is not None:
        given = body.setdefault("name", name)
        if given != name:
            raise InvalidParameter(
                "name", f"the body names {str(given)[:100]!r}, the path {name!r}: renaming is"
                " deleting one provider and creating another"
            )  # fmt: skip
    try:
        return check_provider_body(body), body
    except BodyError as exc:
        raise InvalidParameter(exc.field, exc.problem) from None


def _if_match(request: web.Request) -> IfMatch | None:
    """The versions `If-Match` names (RFC 9110: `*`, or a list of entity tags); None when
    the request has none."""
    header = request[ARGUMENTS].text("If-Match")
    if header is None:
        return None
    header = header.strip()
    if header == "*":
        return IfMatch(any=True)
    tags = [tag.strip() for tag in header.split(",")]
    matches = [_ENTITY_TAG.fullmatch(tag) for tag in tags]
    if not tags or any(match is None for match in matches):
        raise InvalidParameter(
            "If-Match", f"expected ETags as GET /api/providers/{{name}} gives them (like"
            f' "42"), or *; got {header[:60]!r}'
        )  # fmt: skip
    # A weak tag never matches (If-Match compares strongly): it names no version.
    return IfMatch(tuple(int(m[2]) for m in matches if m is not None and not m[1]))


async def _changed(
    request: web.Request, name: str, position: int, status: int = 200
) -> web.Response:
    await visible(request, position)
    state = models_of(request).projections.providers.get(name)
    assert state is not None  # its configuration event was just folded
    return _with_etag(request, state, status)


async def create_provider(request: web.Request) -> web.Response:
    provider, definition = await _definition(request)
    position = await request.app[MONITOR].create(provider, definition, request[WRITER])
    response = await _changed(request, provider.name, position, status=201)
    response.headers["Location"] = f"/api/providers/{quote(provider.name, safe='')}"
    return response


async def replace_provider(request: web.Request) -> web.Response:
    name = request[ARGUMENTS].path("name")
    monitor = request.app[MONITOR]
    # What is not there, or not the API's to change, says so before what the request lacks.
    monitor.check_changeable(name, "change")
    if_match = _if_match(request)
    if if_match is None:
        raise DefinitionRefused(
            428, "precondition-required", "Precondition required",
            "a PUT needs If-Match with the provider's ETag, from GET /api/providers/{name},"
            " so that it cannot overwrite a change it has not seen",
        )  # fmt: skip
    provider, definition = await _definition(request, name)
    position = await monitor.replace(provider, definition, request[WRITER], if_match)
    return await _changed(request, name, position)


async def delete_provider(request: web.Request) -> web.Response:
    name = request[ARGUMENTS].path("name")
    monitor = request.app[MONITOR]
    monitor.check_changeable(name, "delete")
    position = await monitor.delete(name, request[WRITER], _if_match(request))
    return await _changed(request, name, position)


async def pause_provider(request: web.Request) -> web.Response:
    name = request[ARGUMENTS].path("name")
    position = await request.app[MONITOR].pause(name, request[WRITER])
    return await _changed(request, name, position)


async def resume_provider(request: web.Request) -> web.Response:
    name = request[ARGUMENTS].path("name")
    position = await request.app[MONITOR].resume(name, request[WRITER])
    return await _changed(request, name, position)


def _latency_stats(stats: WindowStats) -> LatencyStats:
    return LatencyStats(
        total_attempts=stats.count,
        successful=stats.successes,
        failed=stats.by_outcome.get("failed", 0),
        timeout=stats.by_outcome.get("timeout", 0),
        rate_limited=stats.by_outcome.get("rate_limited", 0),
        success_rate=rounded(None if stats.uptime is None else stats.uptime * 100, 2),
        uptime=rounded(None if stats.uptime is None else stats.uptime * 100, 2),
        avg_response_time_ms=rounded(stats.avg_latency_ms),
        p50_ms=rounded(stats.p50),
        p95_ms=rounded(stats.p95),
        p99_ms=rounded(stats.p99),
    )


def _known_regions(request: web.Request, state: ProviderState) -> list[str]:
    """The regions with anything about the provider: judged there, or probed there."""
    metrics = models_of(request).projections.metrics
    return sorted({*state.regions, *metrics.regions().get(state.name, ())})


async def provider_stats(request: web.Request) -> web.Response:
    state = provider_state(request)
    args = request[ARGUMENTS]
    hours = args.number("hours")
    region = args.text("region")
    key = state.name
    if region is not None:
        known = _known_regions(request, state)
        if region not in known:
            where = (
                f"it was probed in {', '.join(known)}"
                if known
                else "no probe of it carried a region"
            )
            raise NotFound(
                "region", f"{state.name[:100]!r} has no data from region {region!r}; {where}"
            )
        key = regional(state.name, region)
    now = time.time()
    metrics = models_of(request).projections.metrics
    health_window = metrics.window(key, now - hours * HOUR, now, "health")
    collection_window = metrics.window(key, now - hours * HOUR, now, "collection")

    def uptime(seconds: float) -> float | None:
        value = metrics.window(key, now - seconds, now, "health").uptime
        return rounded(None if value is None else value * 100, 2)

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
            removed=state.removed,
            removed_at=iso_time(state.removed_at),
            region=region,
        )
    )


async def provider_series(request: web.Request) -> web.Response:
    state = provider_state(request)
    hours = request[ARGUMENTS].number("hours")
    step = series_step(hours)
    now = time.time()
    # Whole steps, so each point is whole minute (hour, day) buckets.
    since = (now - hours * HOUR) // step * step
    points = [
        MetricsPoint(
            timestamp=iso_time(point.start),
            probes=point.probes,
            failures=point.failures,
            avg_response_time_ms=rounded(point.avg_latency_ms),
            p50_ms=rounded(point.p50),
            p95_ms=rounded(point.p95),
        )
        for point in models_of(request).projections.metrics.series(
            state.name, since, now, step, "health"
        )
    ]
    return respond(
        ProviderSeries(
            provider=state.name,
            hours=hours,
            step_seconds=step,
            points=points,
            removed=state.removed,
            removed_at=iso_time(state.removed_at),
        )
    )
