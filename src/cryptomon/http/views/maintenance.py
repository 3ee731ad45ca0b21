"""`/api/maintenance`: maintenance windows, and creating or cancelling one (writes).

A window created here is recorded as `MaintenanceWindowScheduled` with source `api`; one
from the config file (source `file`) belongs to the file and is not cancelled here.
"""

from __future__ import annotations

import secrets
import time

import msgspec
from aiohttp import web

from cryptomon.config import BodyError, check_maintenance_body
from cryptomon.events.log import ConcurrencyError
from cryptomon.events.types import EventMetadata, MaintenanceWindowCancelled
from cryptomon.http.errors import Conflict, InvalidParameter, NotFound
from cryptomon.http.keys import ARGUMENTS, WRITER
from cryptomon.http.schemas import MaintenanceList, MaintenanceWindowView
from cryptomon.http.views import log_of, models_of, respond, visible
from cryptomon.isotime import iso_time
from cryptomon.probing.monitor import maintenance_stream, window_of
from cryptomon.projections.maintenance import Window, next_occurrence


def window_view(window: Window, now: float) -> MaintenanceWindowView:
    definition = window.definition
    upcoming = None if window.cancelled_at is not None else next_occurrence(definition, now)
    if window.cancelled_at is not None:
        state = "cancelled"
    elif upcoming is None:
        state = "past"
    elif upcoming[0] <= now:
        state = "active"
    else:
        state = "upcoming"
    return MaintenanceWindowView(
        id=window.id,
        name=definition.name,
        source=definition.source,
        state=state,  # type: ignore[arg-type]
        providers=list(definition.providers),
        categories=list(definition.categories),
        cron=definition.cron,
        duration_seconds=definition.duration_seconds,
        start=iso_time(definition.start),
        end=iso_time(definition.end),
        next_start=None if upcoming is None else iso_time(upcoming[0]),
        next_end=None if upcoming is None else iso_time(upcoming[1]),
        scheduled_at=iso_time(window.scheduled_at),
        position=window.position,
        cancelled_at=iso_time(window.cancelled_at),
        cancelled_by=window.cancelled_by,
    )


async def maintenance_windows(request: web.Request) -> web.Response:
    now = time.time()
    windows = [window_view(w, now) for w in models_of(request).projections.maintenance.all()]
    return respond(MaintenanceList(count=len(windows), windows=windows))


async def create_window(request: web.Request) -> web.Response:
    identity = request[WRITER]
    try:
        # The whole body: the app refuses one over its client_max_size (64 KiB) with a 413.
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        raise InvalidParameter("body", "the body is not JSON") from None
    models = models_of(request)
    known = {provider.name.casefold() for provider in models.projections.providers.all()}
    try:
        config = check_maintenance_body(body, known)
    except BodyError as exc:
        raise InvalidParameter(exc.field, exc.problem) from None
    window_id = f"api:{secrets.token_hex(6)}"
    event = window_of(config, window_id, "api")
    store = log_of(request)
    [position] = await store.append(
        maintenance_stream(window_id), [event], expected_version=0,
        metadata=EventMetadata(actor=identity),
    )  # fmt: skip
    await visible(request, position)
    window = models.projections.maintenance.get(window_id)
    assert window is not None
    return respond(window_view(window, time.time()), status=201)


async def cancel_window(request: web.Request) -> web.Response:
    identity = request[WRITER]
    window_id = request[ARGUMENTS].text("window_id")
    assert window_id is not None
    maintenance = models_of(request).projections.maintenance
    window = maintenance.get(window_id)
    if window is None:
        raise NotFound("maintenance-window", f"there is no maintenance window {window_id!r}")
    if window.definition.source == "file":
        raise Conflict(
            "window-from-file",
            "Defined by the config file",
            f"maintenance window {window_id!r} is defined by the config file: remove it from"
            " the file's [[maintenance]] entries instead",
        )
    if window.cancelled_at is not None:
        raise Conflict(
            "already-cancelled",
            "Already cancelled",
            f"maintenance window {window_id!r} was cancelled at {iso_time(window.cancelled_at)}",
        )
    store = log_of(request)
    stream = maintenance_stream(window_id)
    cancel = MaintenanceWindowCancelled(window_id, identity, time.time())
    try:
        [position] = await store.append(
            stream, [cancel], expected_version=await store.stream_version(stream),
            metadata=EventMetadata(actor=identity),
        )  # fmt: skip
    except ConcurrencyError:
        raise Conflict(
            "already-cancelled", "Already cancelled",
            f"maintenance window {window_id!r} changed meanwhile (cancelled by another request)",
        ) from None  # fmt: skip
    await visible(request, position)
    cancelled = maintenance.get(window_id)
    assert cancelled is not None
    return respond(window_view(cancelled, time.time()))
