"""`/api/events`: the event log, oldest first, with a cursor."""

from __future__ import annotations

import msgspec
from aiohttp import web

from cryptomon.http.keys import (
    ARGUMENTS,
)
from cryptomon.http.schemas import (
    EventPage,
    EventView,
)
from cryptomon.http.views import log_of, respond
from cryptomon.isotime import iso_time

_payload_builtins = msgspec.to_builtins


async def events(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    after = args.integer("after")
    limit = args.integer("limit")
    event_type = args.text("type")
    stream = args.text("stream")
    store = log_of(request)
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
