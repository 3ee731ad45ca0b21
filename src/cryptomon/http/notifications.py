"""`/api/notifications`: each channel's deliveries, from the notifier's memory."""

from __future__ import annotations

from aiohttp import web

from cryptomon.http.keys import NOTIFIER
from cryptomon.http.schemas import NotificationChannelView, NotificationsView
from cryptomon.http.views import respond
from cryptomon.isotime import iso_time


async def notifications(request: web.Request) -> web.Response:
    notifier = request.app[NOTIFIER]
    channels = [
        NotificationChannelView(
            name=stats.name,
            kind=stats.kind,
            delivered=stats.delivered,
            failed=stats.failed,
            gave_up=stats.gave_up,
            retrying=stats.retrying,
            pending=stats.pending,
            last_error=stats.last_error,
            last_error_at=iso_time(stats.last_error_at),
            last_delivered_at=iso_time(stats.last_delivered_at),
            delivering=stats.delivering,
        )
        for stats in notifier.stats()
    ]
    return respond(
        NotificationsView(
            enabled=notifier.running,
            position=notifier.stored_position,
            checkpoint_position=notifier.checkpoint_position,
            channels=channels,
        )
    )
