"""Reload without restart: the one function SIGHUP, `POST /api/config/reload` and the
file watch all call.

A reload reads the file again and applies the difference only (`Monitor.apply`):
providers added, removed or changed, and the `[monitoring]` thresholds, each recorded
as an event. Everything else (the server, storage, the live feed, notifications, chains
and quotes) keeps its start-up value, and a change to it is named in `needs_restart`,
never silently dropped. An invalid file changes nothing: its errors are logged, kept
for `/health` to show, and raised as `ConfigInvalid` for the API to answer 422 with.
One reload runs at a time; a second waits for the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from aiohttp import web

from cryptomon.config import Config, ConfigError, load_config
from cryptomon.http.keys import MONITOR, RESPONSE_CACHE, SETTINGS
from cryptomon.probing.monitor import ProviderChanges

log = logging.getLogger(__name__)

# The tables a reload does not apply: their values stay as the service started with them.
RESTART_TABLES = (
    "server",
    "instance",
    "storage",
    "websocket",
    "notifications",
    "chains",
    "quotes",
)


class ConfigInvalid(ValueError):
    """A reload's file did not load: nothing was changed."""

    def __init__(self, source: str, errors: list[str]) -> None:
        super().__init__(f"{source}: {len(errors)} error(s); nothing was changed")
        self.source = source
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What one reload applied, and what it could not."""

    source: str
    trigger: str
    changes: ProviderChanges
    needs_restart: list[str]


def needs_restart(running: Config, loaded: Config) -> list[str]:
    """The keys, as `table.key` (or the table, for a list or a map of tables), whose
    values in `loaded` differ from those `running` was started with and a reload does
    not apply. Names only: a value may be a secret (a database URL)."""
    named: list[str] = []
    for table in RESTART_TABLES:
        was, now = getattr(running, table), getattr(loaded, table)
        if was == now:
            continue
        if isinstance(was, msgspec.Struct):
            named += [
                f"{table}.{key}"
                for key in was.__struct_fields__
                if getattr(was, key) != getattr(now, key)
            ]
        else:
            named.append(table)
    return named


@dataclass(slots=True)
class ConfigReloader:
    """Reloads the file the service was started with. None: it was given its config, not a
    file (an app built in a test): there is nothing to read again, and a reload changes
    nothing."""

    path: Path | None
    errors: list[str] = field(default_factory=list)  # of the last attempt; empty when it applied
    last_attempt: float | None = None
    last_applied: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def reload(self, app: web.Application, trigger: str) -> Reloaded:
        async with self._lock:
            self.last_attempt = time.time()
            settings = app[SETTINGS]
            running = settings.config
            source = str(self.path) if self.path is not None else running.source
            try:
                loaded = (
                    running
                    if self.path is None
                    else await asyncio.to_thread(load_config, self.path)
                )
            except ConfigError as exc:
                self.errors = list(exc.errors)
                log.warning(
                    "config reload (%s) failed, nothing was changed: %s",
                    trigger,
                    "; ".join(exc.errors),
                    extra={"errors": exc.errors},
                )
                raise ConfigInvalid(source, self.errors) from None
            restart = needs_restart(running, loaded)
            # What runs from here on: the file's providers and thresholds, and everything
            # else as the service started with it.
            adopted = msgspec.structs.replace(
                loaded, **{table: getattr(running, table) for table in RESTART_TABLES}
            )
            changes = await app[MONITOR].apply(adopted)
            settings.adopt(adopted)
            app[RESPONSE_CACHE].clear()
            self.errors = []
            self.last_applied = time.time()
            log.info(
                "config reloaded (%s) from %s: added %s, removed %s, changed %s,"
                " thresholds changed %s, needs a restart %s",
                trigger,
                loaded.source,
                changes.added or "none",
                changes.removed or "none",
                changes.changed or "none",
                changes.thresholds or "none",
                restart or "none",
            )
            return Reloaded(loaded.source, trigger, changes, restart)
