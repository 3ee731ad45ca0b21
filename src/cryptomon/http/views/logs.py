"""`/api/logs/{log_type}`: log rows, one indexed page of the event log."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from cryptomon.events.types import (
    RecordedEvent,
)
from cryptomon.http.keys import (
    ARGUMENTS,
)
from cryptomon.http.schemas import (
    LogPage,
)
from cryptomon.http.views import HOUR, log_of, models_of, respond
from cryptomon.probing.monitor import provider_stream
from cryptomon.projections.notices import log_entries

LOG_LABELS = {
    "connection": ["health:ok", "health:fail"],
    "failure": ["health:fail", "collection:fail"],
    "collection": ["collection:ok", "collection:fail"],
}


async def logs(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    log_type = args.path("log_type")
    hours = args.number("hours")
    limit = args.integer("limit")
    provider = args.text("provider")
    since = time.time() - hours * HOUR
    store = log_of(request)
    # A provider's probes and rate-limit changes are its stream's events.
    stream = provider_stream(provider) if provider is not None else None
    if provider is not None and models_of(request).projections.providers.get(provider) is None:
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
