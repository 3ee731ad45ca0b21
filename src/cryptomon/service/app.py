"""The aiohttp application and the resources that live as long as it, opened
and closed through `cleanup_ctx` in order: event store, read models,
notifications, live feed, probing. Shutdown closes the sockets (1001) first;
cleanup then runs in reverse: probing stops, the notifier stores what it owes
and checkpoints, the read models catch up and snapshot, the store drains its
writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp_cors.urldispatcher_router_adapter import ResourcesUrlDispatcherRouterAdapter

from cryptomon.events.log import open_event_log
from cryptomon.events.types import RecordedEvent
from cryptomon.http import routes
from cryptomon.http.errors import Handler, guarded
from cryptomon.http.keys import (
    CLIENT_LIMITS,
    HUB,
    MONITOR,
    NOTIFIER,
    READ_MODELS,
    RELOADER,
    SETTINGS,
    STARTED_AT,
    STORE,
)
from cryptomon.http.limits import ClientLimits
from cryptomon.http.looplag import loop_lag
from cryptomon.http.reload import ConfigInvalid, ConfigReloader
from cryptomon.http.settings import Settings
from cryptomon.notify import Notifier
from cryptomon.notify.outbox import Outbox, SqliteOutbox
from cryptomon.notify.postgres import PostgresOutbox
from cryptomon.probing.definitions import CONFIG_EVENT_TYPES
from cryptomon.probing.leases import ProviderLeases
from cryptomon.probing.monitor import Monitor
from cryptomon.probing.probes import create_probe_session
from cryptomon.probing.regions import REGION_EVENT_TYPES, RegionWatch
from cryptomon.probing.scheduler import everyone
from cryptomon.projections import Notice
from cryptomon.readmodels import ReadModels, projection_settings
from cryptomon.service.housekeeping import add_housekeeping
from cryptomon.ws import handler as feed
from cryptomon.ws.hub import Hub

log = logging.getLogger(__name__)

# Every route the service answers: REST's and the live feed's.
ENDPOINTS = (*routes.ENDPOINTS, *feed.ENDPOINTS)


async def _storage(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = await open_event_log(
        settings.database,
        archive=settings.config.storage.archive_path,
        snapshot_owner=settings.snapshot_owner,
    )
    app[STORE] = store
    try:
        yield
    finally:
        await store.close()


async def _read_models(app: web.Application) -> AsyncIterator[None]:
    config = app[SETTINGS].config
    models = ReadModels(
        app[STORE],
        projection_settings(config),
        snapshot_every_seconds=config.storage.snapshot_interval_seconds,
    )
    report = await models.start()
    log.info(
        "read models at position %d (snapshot at %d, %d events folded%s)",
        models.position,
        report.snapshot_position,
        report.tail_events,
        f"; snapshot discarded: {report.discarded}" if report.discarded else "",
    )
    app[READ_MODELS] = models
    try:
        yield
    finally:
        await models.stop()


async def _notifications(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    config = settings.config
    names = [channel.name for channel in config.notifications]
    # On a shared PostgreSQL log, each channel is delivered by the instance holding its lock.
    outbox: Outbox = (
        PostgresOutbox(settings.database, names)
        if isinstance(settings.database, str)
        else SqliteOutbox(app[STORE], names)
    )
    notifier = Notifier(
        app[STORE],
        config.notifications,
        projection_settings(config),
        outbox=outbox,
        categories={provider.name: provider.category for provider in config.providers},
        environ=settings.environ,
        checkpoint_every_seconds=config.storage.snapshot_interval_seconds,
    )
    # With no checkpoint yet, start from a copy of the read models, not a fold of the log.
    await notifier.start(seed=app[READ_MODELS].projections)
    app[NOTIFIER] = notifier
    try:
        yield
    finally:
        await notifier.stop()


async def _live_feed(app: web.Application) -> AsyncIterator[None]:
    websocket = app[SETTINGS].config.websocket
    hub = Hub(
        app[STORE],
        app[READ_MODELS],
        status_interval=websocket.status_interval_seconds,
        heartbeat_interval=websocket.heartbeat_interval_seconds,
    )
    app[HUB] = hub
    hub.start()
    try:
        yield
    finally:
        await hub.stop()


async def _close_sockets(app: web.Application) -> None:
    # on_shutdown runs before cleanup: clients hear 1001 (going away) first.
    if HUB in app:
        await app[HUB].stop()


async def _probing(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app[STORE]
    region = settings.region
    session = create_probe_session(region=region)
    # On a shared PostgreSQL log, instances divide the providers between them (those of
    # one region among that region's instances).
    leases = (
        ProviderLeases(
            settings.database,
            [p.name for p in settings.config.providers if p.probed_in(region)],
            region,
        )
        if isinstance(settings.database, str) and settings.probing
        else None
    )
    monitor = Monitor(
        settings.config,
        store,
        session,
        environ=settings.environ,
        owns=leases.owns if leases is not None else everyone,
        region=region,
    )
    if leases is not None:
        monitor.peers = leases
        monitor.on_providers = leases.track
        leases.on_regions = monitor.set_live_regions
    # Which regions report (RegionJoined, RegionLost): an instance with a region joins
    # it; on PostgreSQL every instance watches for a region whose last instance is gone.
    regions = (
        RegionWatch(store, region=region, instance=monitor.instance, leases=leases)
        if settings.probing and (region is not None or leases is not None)
        else None
    )
    add_housekeeping(monitor.scheduler, app[READ_MODELS], settings.config)
    app[MONITOR] = monitor
    models = app[READ_MODELS]

    def configuration_recorded(recorded: RecordedEvent, notices: list[Notice]) -> None:
        # Any instance's change over the API, or its file's: schedule from the log again.
        if recorded.type in CONFIG_EVENT_TYPES:
            monitor.configuration_recorded()
        elif regions is not None and recorded.type in REGION_EVENT_TYPES:
            regions.recorded(recorded)

    # Listening before start-up reads the log: another instance's change that lands
    # meanwhile is followed too (follows wait for the start-up's, and run once for many).
    models.listeners.append(configuration_recorded)
    try:
        if leases is not None:
            await leases.start()
        if regions is not None:
            # After the leases hold the region's lock: no survivor sees it joined, unheld.
            await regions.start()
            if leases is not None:
                leases.after_round = regions.check
        if settings.probing:
            await monitor.start()
        else:
            await monitor.load()
        yield
    finally:
        models.listeners.remove(configuration_recorded)
        await monitor.stop()
        if leases is not None:
            await leases.stop()
        await session.close()


# How often `[server] watch_config` looks at the file's modification time.
WATCH_INTERVAL_SECONDS = 2.0


async def _reload_quietly(app: web.Application, trigger: str) -> None:
    """A reload nobody waits on the answer of: its errors are in the log line and /health."""
    with contextlib.suppress(ConfigInvalid):
        await app[RELOADER].reload(app, trigger)


async def _watching(app: web.Application) -> AsyncIterator[None]:
    """With `[server] watch_config`, reload when the file's modification time changes."""
    path = app[RELOADER].path
    if not app[SETTINGS].config.server.watch_config or path is None:
        yield
        return

    def modified() -> float | None:
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None  # moved away mid-edit: look again later

    async def watch() -> None:
        seen = modified()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            now = modified()
            if now is not None and now != seen:
                seen = now
                await _reload_quietly(app, "file watch")

    watcher = asyncio.create_task(watch(), name="config-watch")
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def reload_on_hangup(app: web.Application) -> AsyncIterator[None]:
    """SIGHUP reloads the config (it used to end the process). `serve` adds this; an app
    in a test process leaves that process's signals alone."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    def hangup() -> None:
        task = asyncio.create_task(_reload_quietly(app, "SIGHUP"), name="config-reload")
        running.add(task)
        task.add_done_callback(running.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Every resource, opened in order and closed in reverse.

    One exit stack rather than one cleanup context each: when a later one
    fails to start (say, a corrupt log), aiohttp's runner does not unwind the
    ones already started, and an open store would keep the process alive."""
    async with contextlib.AsyncExitStack() as stack:
        for resource in (
            loop_lag,
            _storage,
            _read_models,
            _notifications,
            _live_feed,
            _probing,
            _watching,
        ):
            await stack.enter_async_context(contextlib.asynccontextmanager(resource)(app))
        yield


def create_app(settings: Settings) -> web.Application:
    server = settings.config.server
    # No middleware: the route table guards every route itself (errors.guarded).
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[CLIENT_LIMITS] = ClientLimits(
        server.requests_per_second,
        server.request_burst,
        server.websocket_connections_per_address,
        server.trusted_proxies,
    )
    app[STARTED_AT] = time.time()
    app[RELOADER] = ConfigReloader(settings.config_path)
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_close_sockets)
    routes.add_routes(app, ENDPOINTS)
    _allow_origins(app, settings.config.server.cors_origins)
    return app


def _allow_origins(app: web.Application, origins: tuple[str, ...]) -> None:
    """CORS for exactly the configured origins; none configured means none allowed, and
    no CORS machinery in the way of every request (a preflight then gets the 405 any
    unrouted method gets)."""
    if not origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        allow_headers=("Authorization", "Content-Type", "If-Match"),
        expose_headers=("ETag", "Location"),
        allow_methods=("GET", "POST", "PUT", "DELETE"),
        max_age=600,
    )
    hooks = len(app.on_response_prepare)
    defaults = {origin: options for origin in origins}
    cors = aiohttp_cors.CorsConfig(
        app, defaults=defaults, router_adapter=_GuardedPreflights(app.router, defaults)
    )
    for route in list(app.router.routes()):
        if route.method != "*":  # the catch-all for unrouted requests
            cors.add(route)
    # aiohttp_cors's response hook looks up the route's CORS configuration for every
    # response before it finds no Origin header and adds nothing (CORS 6.1.1): 5 % of
    # the service's time answering from the cache, for clients that are no browser.
    for index in range(hooks, len(app.on_response_prepare)):
        app.on_response_prepare[index] = _with_origin(app.on_response_prepare[index])


class _GuardedPreflights(ResourcesUrlDispatcherRouterAdapter):
    """aiohttp_cors's routing, its preflight handler behind the same guard as every
    route (the per-client limiter; a refused origin's 403 as a problem document)."""

    def add_preflight_handler(
        self,
        routing_entity: web.Resource | web.StaticResource | web.ResourceRoute,
        handler: Handler,
        webview: bool = False,  # the base's signature; deprecated there, unused
    ) -> None:
        if not isinstance(routing_entity, web.ResourceRoute):  # a route comes back here
            handler = guarded(handler)  # as its resource: guard once, where it is added
        super().add_preflight_handler(routing_entity, handler)


ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[object]]


def _with_origin(hook: ResponseHook) -> ResponseHook:
    """`hook`, run only for a request with an Origin header (a browser's cross-origin one)."""

    async def with_origin(request: web.Request, response: web.StreamResponse) -> None:
        if hdrs.ORIGIN in request.headers:
            await hook(request, response)

    return with_origin
