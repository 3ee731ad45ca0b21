"""Every typed key the app's parts are found under, in one place.

REST and the live feed both import their keys from here, so neither imports the
other for one. The types are named for the checker only: this module imports
nothing of ours at run time, so anything may import it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from cryptomon.events.log import EventLog
    from cryptomon.http.cache import CachedAnswer
    from cryptomon.http.dashboard import Asset
    from cryptomon.http.limits import ClientLimits
    from cryptomon.http.looplag import LoopLag
    from cryptomon.http.params import Arguments
    from cryptomon.http.reload import ConfigReloader
    from cryptomon.http.settings import Settings
    from cryptomon.notify import Notifier
    from cryptomon.probing.monitor import Monitor
    from cryptomon.readmodels import ReadModels
    from cryptomon.ws.hub import Hub

# What the app was started with, and when.
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STARTED_AT: web.AppKey[float] = web.AppKey("started_at")
# Reads the file again and applies the difference (SIGHUP, the API, the file watch).
RELOADER: web.AppKey[ConfigReloader] = web.AppKey("reloader")

# The flow: the log, the read models folded from it, the monitor that probes.
STORE: web.AppKey[EventLog] = web.AppKey("store")
READ_MODELS: web.AppKey[ReadModels] = web.AppKey("read_models")
MONITOR: web.AppKey[Monitor] = web.AppKey("monitor")
NOTIFIER: web.AppKey[Notifier] = web.AppKey("notifier")
HUB: web.AppKey[Hub] = web.AppKey("hub")  # the live feed's clients

# The HTTP side's own state.
CLIENT_LIMITS: web.AppKey[ClientLimits] = web.AppKey("client_limits")
LOOP_LAG: web.AppKey[LoopLag] = web.AppKey("loop_lag")
RESPONSE_CACHE: web.AppKey[dict[str, CachedAnswer]] = web.AppKey("response_cache")
DASHBOARD_ASSETS: web.AppKey[dict[str, Asset]] = web.AppKey("dashboard_assets")
OPENAPI_DOCUMENT: web.AppKey[bytes] = web.AppKey("openapi_document")

# Per request: the actor a write is recorded under, set by the route table's check
# before a write handler runs (see authorization.py).
WRITER: web.RequestKey[str] = web.RequestKey("writer")
# Per request: the tokens the live feed's first message must carry one of (none: it may
# follow already), set by the route table's check before the feed's handler runs.
FEED_TOKENS: web.RequestKey[tuple[str, ...]] = web.RequestKey("feed_tokens")
# Per request: its parameters as the route table's declaration parsed them (params.py).
ARGUMENTS: web.RequestKey[Arguments] = web.RequestKey("arguments")
