"""`/api/config/reload`: read the config file again and apply the difference (a write)."""

from __future__ import annotations

from aiohttp import web

from cryptomon.http.keys import MONITOR, RELOADER, WRITER
from cryptomon.http.schemas import ConfigReloaded
from cryptomon.http.views import log_of, respond, visible


async def reload_config(request: web.Request) -> web.Response:
    reloaded = await request.app[RELOADER].reload(request.app, f"api, {request[WRITER]}")
    position = log_of(request).head
    await visible(request, position)
    changes = reloaded.changes
    return respond(
        ConfigReloaded(
            success=True,
            source=reloaded.source,
            added=changes.added,
            removed=changes.removed,
            changed=changes.changed,
            thresholds_changed=changes.thresholds,
            needs_restart=reloaded.needs_restart,
            position=position,
            conflicts=list(request.app[MONITOR].conflicts.values()),
        )
    )
