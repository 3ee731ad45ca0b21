"""`/api/alerts`: alerts, and acknowledging one (a write)."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from cryptomon.events.log import ConcurrencyError
from cryptomon.events.types import (
    EventMetadata,
)
from cryptomon.http.errors import InvalidParameter
from cryptomon.http.keys import (
    ARGUMENTS,
    WRITER,
)
from cryptomon.http.schemas import (
    AcknowledgeBody,
    Acknowledged,
    AlertList,
)
from cryptomon.http.views import HOUR, log_of, models_of, respond, visible
from cryptomon.projections import AlreadyAcknowledgedError
from cryptomon.projections.views import AlertView


async def _body(request: web.Request) -> AcknowledgeBody:
    raw = await request.read()
    if not raw.strip():
        return AcknowledgeBody()
    try:
        body = msgspec.json.decode(raw, type=AcknowledgeBody)
    except msgspec.ValidationError as exc:
        raise InvalidParameter("body", f"the JSON body is not valid: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidParameter("body", "the body is not JSON") from None
    for name in ("note", "actor"):
        value = getattr(body, name)
        if value is not None and len(value) > 1000:
            raise InvalidParameter(name, f"{name} must be at most 1000 characters")
        if value is not None and "\x00" in value:
            # No database text column can hold it (PostgreSQL refuses it outright).
            raise InvalidParameter(name, f"{name} must not contain a NUL character")
    return body


async def alerts(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    acknowledged = args.boolean("acknowledged")
    hours = args.number("hours")
    provider = args.text("provider")
    severity = args.text("severity")
    open_only = args.boolean("open") or False
    limit = args.integer("limit")
    found = models_of(request).projections.alerts.query(
        acknowledged=acknowledged,
        since=time.time() - hours * HOUR,
        provider=provider,
        severity=severity,  # type: ignore[arg-type]
        open_only=open_only,
        limit=limit,
    )
    return respond(AlertList(count=len(found), alerts=[AlertView.of(a) for a in found]))


async def acknowledge_alert(request: web.Request) -> web.Response:
    identity = request[WRITER]
    alert_id = request[ARGUMENTS].integer("alert_id")
    body = await _body(request)
    models = models_of(request)
    alerts_model = models.projections.alerts
    alerts_model.check_acknowledge(alert_id)
    actor = body.actor or identity
    store = log_of(request)
    stream, acknowledgement = alerts_model.acknowledgement(alert_id, actor, time.time(), body.note)
    try:
        [position] = await store.append(
            stream,
            [acknowledgement],
            # Only acknowledgements append to this stream, so an alert acknowledged
            # already has version 1 here, even while the read models lag behind the log.
            expected_version=0,
            metadata=EventMetadata(actor=actor),
        )
    except ConcurrencyError:
        # Acknowledged already: a 409, not a storage failure. Once that acknowledgement
        # is visible, the check says by whom and when; it may not have committed yet
        # (same batch), but it is at or before the head.
        await visible(request, store.head)
        alerts_model.check_acknowledge(alert_id)
        raced = alerts_model.get(alert_id)
        assert raced is not None
        raise AlreadyAcknowledgedError(raced) from None
    await visible(request, position)
    alert = alerts_model.get(alert_id)
    assert alert is not None
    return respond(Acknowledged(success=True, alert=AlertView.of(alert), position=position))
