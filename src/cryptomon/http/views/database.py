"""`/api/database`: the event store's statistics and health."""

from __future__ import annotations

from aiohttp import web

from cryptomon.events.archive import log_segments
from cryptomon.http.schemas import (
    DatabaseComponent,
    DatabaseHealth,
    DatabaseStats,
)
from cryptomon.http.views import log_of, models_of, respond


def database_component(request: web.Request) -> DatabaseComponent:
    store = log_of(request)
    models = models_of(request)
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


async def database_stats(request: web.Request) -> web.Response:
    store = log_of(request)
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
    store = log_of(request)
    database = database_component(request)
    body = DatabaseHealth(
        status=database.status,
        path=store.location,
        writable=not store.last_write_failed,
        size_mb=database.size_mb,
        event_position=store.head,
        read_model_position=models_of(request).position,
        failed_appends=store.failed_appends,
        last_hash=store.last_hash,
        history=database.history,
        error=database.error,
    )
    return respond(body, status=200 if database.status == "healthy" else 503)
