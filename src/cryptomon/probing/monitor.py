"""The probing side of the service: config in, events out.

`Monitor` registers the configured providers, schedules their health probes
and the seed's named collection jobs, counts every request against the
provider's rate limit, and appends each result to the event log. It keeps no
state a read model needs: projections build those from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
import msgspec

from cryptomon.config import (
    Collection,
    Config,
    MaintenanceConfig,
    ProbeRequest,
    ProviderConfig,
)
from cryptomon.events.log import ConcurrencyError, EventLog, StoreError
from cryptomon.events.types import (
    Event,
    EventMetadata,
    JobTriggered,
    MaintenanceWindowCancelled,
    MaintenanceWindowScheduled,
    MonitoringChanged,
    ProbeKind,
    ProviderPaused,
    ProviderRegistered,
    ProviderRemoved,
    ProviderResumed,
    ProviderSource,
    RateLimitSpec,
    WindowSource,
)
from cryptomon.probing.definitions import (
    DefinitionRefused,
    Entry,
    IfMatch,
    defined_over_api,
    read_book,
    registration_stream,
)
from cryptomon.probing.probes import BodyCheck, ProbeResult, ProbeSpec, probe
from cryptomon.probing.ratelimit import RateLimitTracker
from cryptomon.probing.scheduler import (
    Action,
    Clock,
    CronSchedule,
    IntervalSchedule,
    Schedule,
    Scheduler,
    SystemClock,
    UnknownJobError,
    everyone,
    spread_offset,
)

log = logging.getLogger(__name__)

# The seed's job ids (users trigger these by name), the categories whose data
# endpoints each one probes, and how often.
COLLECTION_JOBS: dict[str, tuple[tuple[str, ...], float]] = {
    "market_data": (("market_data", "exchanges", "defi_analytics"), 60.0),
    "explorer_data": (("blockchain_explorers", "rpc_nodes"), 300.0),
    "news_collection": (("news",), 600.0),
    "sentiment_collection": (("sentiment",), 900.0),
}
RATE_LIMIT_SNAPSHOT_SECONDS = 60.0
# Maintenance events are one per window and change: read them all at once.
_ALL = 1_000_000
# Without a configured limit, provider headers still report usage per minute.
DEFAULT_WINDOW_SECONDS = 60.0


def provider_stream(name: str) -> str:
    return f"provider:{name}"


def maintenance_stream(window_id: str) -> str:
    return f"maintenance:{window_id}"


def file_window_id(name: str) -> str:
    return f"file:{name}"


def window_of(
    window: MaintenanceConfig, window_id: str, source: WindowSource
) -> MaintenanceWindowScheduled:
    """The event recording `window`'s whole definition."""
    return MaintenanceWindowScheduled(
        window_id=window_id,
        name=window.name,
        source=source,
        providers=window.providers,
        categories=tuple(window.categories),
        cron=window.cron,
        duration_seconds=window.duration_seconds,
        start=None if window.start is None else window.start.timestamp(),
        end=None if window.end is None else window.end.timestamp(),
    )


# The stream of the `[monitoring]` thresholds as recorded (`config:<provider>` holds a
# provider's registrations; this name is outside that form, so no provider collides).
MONITORING_STREAM = "config-monitoring"


def monitoring_of(config: Config) -> MonitoringChanged:
    """The file's `[monitoring]` thresholds as the event the folds judge by."""
    monitoring = config.monitoring
    return MonitoringChanged(
        offline_after_failures=monitoring.offline_after_failures,
        online_after_successes=monitoring.online_after_successes,
        certificate_warning_seconds=monitoring.certificate_warning_seconds,
        certificate_critical_seconds=monitoring.certificate_critical_seconds,
        failure_ratio_min_probes=monitoring.failure_ratio_min_probes,
    )


def registration_of(
    provider: ProviderConfig,
    environ: Mapping[str, str],
    source: ProviderSource = "file",
    definition: dict[str, Any] | None = None,
) -> ProviderRegistered:
    """The provider's configuration as an event: the key's env var name, never the key
    (and, defined over the API, the whole `definition` it was accepted with)."""
    limit = provider.rate_limit
    return ProviderRegistered(
        provider=provider.name,
        category=provider.category,
        base_url=provider.base_url,
        health_path=provider.health_path,
        schedule=provider.schedule_text,
        timeout_ms=round(provider.timeout_seconds * 1000),
        degraded_latency_ms=round(provider.degraded_latency_seconds * 1000),
        rate_limit=RateLimitSpec(limit.requests, limit.per_seconds) if limit else None,
        api_key_env=provider.api_key_env,
        key_configured=provider.key_status(environ) != "unconfigured",
        collections=tuple(c.path for c in provider.collections),
        method=provider.http_method,
        conditions=provider.conditions,
        maintenance_when=provider.maintenance_when,
        observe=tuple(provider.observe),
        chain=provider.chain,
        quote=provider.quote,
        source=source,
        definition=definition,
        regions=provider.regions,
    )


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One probe of a provider, its checks compiled: the health probe or a collection."""

    provider: ProviderConfig
    request: ProbeRequest
    kind: ProbeKind
    path: str
    spec: ProbeSpec
    check: BodyCheck | None  # a collection's expect_key / expect_non_empty

    @classmethod
    def health(cls, provider: ProviderConfig) -> ProbeTarget:
        spec = ProbeSpec(provider, provider.maintenance_when)
        return cls(provider, provider, "health", provider.health_path, spec, None)

    @classmethod
    def collection(cls, provider: ProviderConfig, collection: Collection) -> ProbeTarget:
        check = BodyCheck(collection.expect_key, collection.expect_non_empty)
        spec = ProbeSpec(collection)
        return cls(provider, collection, "collection", collection.path, spec, check)


def probe_targets(provider: ProviderConfig) -> list[ProbeTarget]:
    """Every probe of `provider`: its health probe, then each collection."""
    collections = [ProbeTarget.collection(provider, c) for c in provider.collections]
    return [ProbeTarget.health(provider), *collections]


async def send_probe(
    session: aiohttp.ClientSession,
    target: ProbeTarget,
    environ: Mapping[str, str],
    *,
    scheduled_at: float | None = None,
    clock: Callable[[], float] = time.time,
    explain: bool = False,
    region: str | None = None,
) -> ProbeResult:
    """Probe `target` once, with its key and env: headers read from `environ` now; the
    event names the probing instance's `region`."""
    provider = target.provider
    key = provider.api_key(environ)
    auth_headers, params = provider.request_auth(key)
    headers, secrets = target.request.request_headers(environ)
    if key is not None:
        secrets.append(key)
    return await probe(
        session,
        provider=provider.name,
        kind=target.kind,
        url=provider.url(target.path),
        endpoint=target.path,
        timeout=provider.timeout_seconds,
        headers={**headers, **auth_headers},
        params=params,
        spec=target.spec,
        check=target.check,
        secrets=secrets,
        scheduled_at=scheduled_at,
        clock=clock,
        explain=explain,
        region=region,
    )


@dataclass(slots=True)
class ProviderChanges:
    """What applying a new configuration changed: providers by name, and the
    `[monitoring]` thresholds that took new values."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    thresholds: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ProbeCounters:
    appended: int = 0
    lost: int = 0  # probed, but the log refused the result
    skipped_blocked: int = 0  # not sent: the provider told us to back off


class Peers(Protocol):
    """The other instances on one PostgreSQL log (`ProviderLeases`)."""

    def name(self) -> str: ...

    def is_live_peer(self, actor: str | None) -> bool: ...


class Monitor:
    def __init__(
        self,
        config: Config,
        store: EventLog,
        session: aiohttp.ClientSession,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] = os.environ,
        max_concurrency: int = 64,
        owns: Callable[[str], bool] = everyone,
        instance: str | None = None,
        region: str | None = None,
    ) -> None:
        self.config = config
        # Where this instance probes from: its probe and rate-limit events say so, and it
        # probes only the providers probed in its region (`ProviderConfig.probed_in`).
        self.region = region
        # How many regions have a live instance (the leases count them; 1 until they do):
        # a provider naming no regions is probed from each, and spends its key from each.
        self.live_regions = 1
        # Probe results name the instance that recorded them: with several instances on
        # one log, an audit can tell who probed what.
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.metadata = EventMetadata(actor=f"monitor@{self.instance}")
        # The other instances on the same PostgreSQL log (the leases know them); None: none.
        self.peers: Peers | None = None
        # Providers this instance's file defines otherwise than another running instance's
        # (or not at all): name -> what is wrong. Reported, never fought over.
        self.conflicts: dict[str, str] = {}
        self.store = store
        self.session = session
        self.clock: Clock = clock or SystemClock()
        self.environ = environ
        self.scheduler = Scheduler(self.clock, max_concurrency, owns)
        self.counters = ProbeCounters()
        # The log's configuration events by provider (see definitions.py), as last read.
        self.book: dict[str, Entry] = {}
        # Every current provider (the file's or the catalogue's, then those defined over
        # the API), paused ones included, and where each comes from.
        self.providers: dict[str, ProviderConfig] = {p.name: p for p in config.providers}
        self.sources: dict[str, ProviderSource] = dict.fromkeys(
            self.providers, config.providers_source
        )
        # The providers scheduled: current, not paused, not skipped for a missing key, and
        # probed in this instance's region.
        self.probed = [
            p for p in config.providers if p.skip_reason(environ) is None and p.probed_in(region)
        ]
        self.trackers = {p.name: self._tracker(p) for p in self.probed}
        # Called with the current providers' names after each change (the PostgreSQL
        # leases divide exactly those between the instances).
        self.on_providers: Callable[[list[str]], None] | None = None
        # One change of configuration at a time (`apply`, the API's, the log's).
        self._applying = asyncio.Lock()
        self._following: asyncio.Task[None] | None = None
        self._follow_again = False
        self._plan_jobs()

    def _plan_jobs(self) -> None:
        scheduler = self.scheduler
        scheduler.add_job("health_checks", "health probe of every provider", "per provider")
        for job_id, (categories, interval) in COLLECTION_JOBS.items():
            scheduler.add_job(
                job_id, f"data endpoints of {', '.join(categories)}", f"every {interval:g}s"
            )
        for provider in self.probed:
            self._plan_provider(provider)
        scheduler.add_job(
            "rate_limit_snapshot",
            "record usage that fell back under a threshold",
            f"every {RATE_LIMIT_SNAPSHOT_SECONDS:g}s",
        )
        scheduler.add_task(
            "rate_limit_snapshot",
            "rate_limit_snapshot",
            self._rate_limit_snapshot,
            IntervalSchedule(RATE_LIMIT_SNAPSHOT_SECONDS),
        )

    def _plan_provider(self, provider: ProviderConfig) -> None:
        """Schedule the health probe of `provider` and its collections' jobs."""
        scheduler = self.scheduler
        scheduler.add_task(
            provider.name,
            "health_checks",
            self._probe_action(ProbeTarget.health(provider)),
            _schedule(provider),
            provider=provider.name,
        )
        for job_id, (categories, interval) in COLLECTION_JOBS.items():
            if provider.category not in categories:
                continue
            for collection in provider.collections:
                name = f"{provider.name} {collection.path}"
                scheduler.add_task(
                    name,
                    job_id,
                    self._probe_action(ProbeTarget.collection(provider, collection)),
                    IntervalSchedule(interval, spread_offset(name, interval)),
                    provider=provider.name,
                )

    async def apply(self, config: Config) -> ProviderChanges:
        """Take a new configuration's providers and thresholds, the difference only: added
        providers are scheduled, removed ones stop, changed ones are rescheduled with their
        new probe; each change is recorded (`register_providers`, `register_monitoring`).
        The runs in flight of a removed or changed provider finish first (a removal is
        recorded after its last probe). Other providers' schedules are left alone."""
        async with self._applying:
            old = {provider.name: provider for provider in self.config.providers}
            new = {provider.name: provider for provider in config.providers}
            changes = ProviderChanges(
                added=[name for name in new if name not in old],
                removed=[name for name in old if name not in new],
                changed=[name for name in new if name in old and new[name] != old[name]],
            )
            before = monitoring_of(self.config)
            after = monitoring_of(config)
            changes.thresholds = [
                name
                for name in MonitoringChanged.__struct_fields__
                if getattr(before, name) != getattr(after, name)
            ]
            self.config = config
            self.book = await read_book(self.store)
            # Stopped before they are recorded removed: no probe of theirs comes after.
            await self._settle()
            await self._register_file()
            await self.register_monitoring()
            return changes

    @property
    def providers_probed(self) -> int:
        """How many providers this instance probes on schedule right now."""
        return sum(self.scheduler.owns(provider.name) for provider in self.probed)

    async def load(self) -> None:
        """Record the file's providers, windows and thresholds where they differ from the
        log, and schedule every current provider: the file's and those the log defines."""
        async with self._applying:
            self.book = await read_book(self.store)
            await self._register_file()
            await self._settle()
        await self.register_maintenance()
        await self.register_monitoring()

    async def start(self) -> None:
        await self.load()
        self.scheduler.start()

    async def register_monitoring(self) -> int:
        """Record the config's `[monitoring]` thresholds when they differ from the last
        recorded (or, with none recorded, from the defaults the folds start with)."""
        thresholds = monitoring_of(self.config)
        if await self.store.stream_version(MONITORING_STREAM) == 0 and (
            thresholds == MonitoringChanged()
        ):
            return 0
        return await self._register(MONITORING_STREAM, thresholds)

    async def stop(self) -> None:
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
        await self.scheduler.stop()

    @property
    def config_actor(self) -> str:
        """Who configuration events from this instance's file are recorded by: the instance,
        and on PostgreSQL its lock, so the others can tell whether it still runs."""
        return f"config@{self.instance}{self.peers.name() if self.peers is not None else ''}"

    async def register_providers(self) -> int:
        """Record each provider of the file whose configuration differs from the last one
        recorded, and `ProviderRemoved` for each registered one that is no longer a
        current provider (so it is not left behind as a ghost); return how many events
        were recorded."""
        async with self._applying:
            self.book = await read_book(self.store)
            recorded = await self._register_file()
            await self._settle()
            return recorded

    async def _register_file(self) -> int:
        recorded = 0
        wanted = self._wanted()
        for name, provider in wanted.items():
            source = self.sources[name]
            # One defined over the API is recorded again only when this environment holds
            # its key where the last registration's did not (or the other way round).
            definition = self.book[name].definition if source == "api" else None
            recorded += await self._record_definition(
                registration_of(provider, self.environ, source, definition)
            )
        taken = {provider.name.casefold() for provider in self.config.providers}
        for name, entry in sorted(self.book.items()):
            # The API's own stay, even one today's rules refuse (kept, not probed), unless
            # the file now defines the name.
            api = entry.source == "api" and name.casefold() not in taken
            if entry.current and name not in wanted and not api:
                recorded += await self._record_definition(ProviderRemoved(name))
        if recorded:
            self.book = await read_book(self.store)
        return recorded

    def _wanted(self) -> dict[str, ProviderConfig]:
        """The current providers, by name: the file's (a catalogue provider deleted over
        the API stays off), then those the log defines over the API. A file defining a
        name the API defined too wins: that is logged, and the file's registration
        replaces the API's in the log."""
        wanted: dict[str, ProviderConfig] = {}
        sources: dict[str, ProviderSource] = {}
        source = self.config.providers_source
        taken = {provider.name.casefold() for provider in self.config.providers}
        for provider in self.config.providers:
            entry = self.book.get(provider.name)
            if source == "catalogue" and entry is not None and entry.disabled:
                continue
            wanted[provider.name] = provider
            sources[provider.name] = source
        for name, entry in self.book.items():
            if not entry.current or entry.source != "api":
                continue
            if name.casefold() in taken:
                if name in wanted and self.sources.get(name) == "api":
                    log.warning(
                        "provider %s is defined by the config file now; the file's"
                        " definition replaces the one made over the API",
                        name,
                        extra={"provider": name},
                    )
                continue
            defined = defined_over_api(entry)
            if defined is not None:
                wanted[name] = defined
                sources[name] = "api"
        self.sources = sources
        return wanted

    async def _settle(self, replan: str | None = None) -> None:
        """Schedule exactly the current providers that are not paused, from the book: the
        difference only (and `replan`, whose tasks were taken off). The runs in flight of a
        provider stopped or changed finish first. A provider keeps its rate-limit tracker
        (and a back-off it was asked for) unless its limit changed."""
        wanted = self._wanted()
        self.providers = wanted
        scheduled = {
            name: provider
            for name, provider in wanted.items()
            if provider.skip_reason(self.environ) is None
            and provider.probed_in(self.region)
            and not (name in self.book and self.book[name].paused)
        }
        running = {provider.name: provider for provider in self.probed}
        stopped = [
            name for name in running if name not in scheduled or scheduled[name] != running[name]
        ]
        in_flight: list[asyncio.Task[None]] = []
        for name in stopped:
            in_flight += self.scheduler.remove_tasks(name)
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        self.probed = list(scheduled.values())
        for name in list(self.trackers):
            if name not in scheduled:
                del self.trackers[name]
        for name, provider in scheduled.items():
            previous = running.get(name)
            if previous == provider and name != replan:
                continue
            if previous is None or previous.rate_limit != provider.rate_limit:
                self.trackers[name] = self._tracker(provider)
            else:
                self.trackers[name].share(self._regions_spending(provider))
            self._plan_provider(provider)
        if self.on_providers is not None:
            # Offered to the other instances' leases: only what this one would probe.
            self.on_providers(list(scheduled))

    def configuration_recorded(self) -> None:
        """A configuration event was folded (any instance's, an API change on another one
        too): schedule from the log again soon, once for any number of them."""
        self._follow_again = True
        if self._following is None or self._following.done():
            self._following = asyncio.create_task(self._follow(), name="follow-configuration")

    async def _follow(self) -> None:
        while self._follow_again:
            self._follow_again = False
            await self.follow()

    async def follow(self) -> None:
        """Schedule from the log again (another instance's file is its own: nothing is
        recorded for it here), and drop the conflicts the log no longer has."""
        async with self._applying:
            await self._refresh()
            for name in list(self.conflicts):
                if self._agrees(self._file_definition(name), keys_count=False):
                    del self.conflicts[name]

    async def _refresh(self) -> None:
        """Read the log's configuration again and schedule from it: what the API's changes
        check against is the log as it is, not as this instance last followed it."""
        self.book = await read_book(self.store)
        await self._settle()

    def _file_definition(self, name: str) -> ProviderRegistered | ProviderRemoved:
        """What this instance's file says of the provider: its registration, or removed."""
        for provider in self.config.providers:
            if provider.name == name:
                return registration_of(provider, self.environ, self.config.providers_source)
        return ProviderRemoved(name)

    def _agrees(
        self, definition: ProviderRegistered | ProviderRemoved, *, keys_count: bool = True
    ) -> bool:
        """Whether the book's last registration or removal of the provider is `definition`
        (for a removal: whether it was removed, or never registered). Without
        `keys_count`, whether the key is configured is not compared: that is each
        instance's environment, not its file."""
        entry = self.book.get(definition.provider)
        last = None if entry is None else entry.removal or entry.registered
        if isinstance(definition, ProviderRemoved):
            return last is None or isinstance(last, ProviderRemoved)
        if not keys_count and isinstance(last, ProviderRegistered):
            last = msgspec.structs.replace(last, key_configured=definition.key_configured)
        return last == definition

    # ---- changes over the API ------------------------------------------------

    def _entry(self, name: str) -> Entry:
        """The current provider named (paused or not); 404 otherwise."""
        entry = self.book.get(name)
        if name not in self.providers or entry is None:
            raise DefinitionRefused(
                404,
                "not-found",
                "Not found",
                f"no provider named {name[:100]!r}; see /api/providers",
            )
        return entry

    def check_changeable(self, name: str, change: Literal["change", "delete"]) -> None:
        """Refuse (404, 409) a change of a provider that is not there or not the API's to
        change (a catalogue provider can be deleted: disabled), as this instance last read
        the log; the change itself checks again against the log as it is then."""
        self._entry(name)
        source = self.sources[name]
        if source == "file":
            raise DefinitionRefused(
                409,
                "defined-by-file",
                "Defined by the config file",
                f"provider {name!r} is defined by the config file ({self.config.source}):"
                f" {'remove' if change == 'delete' else 'change'} it there, then reload",
            )
        if source == "catalogue" and change == "change":
            raise DefinitionRefused(
                409,
                "defined-by-catalogue",
                "Defined by the bundled catalogue",
                f"provider {name!r} comes from the bundled catalogue: it can be paused,"
                " resumed or deleted (disabled) over the API, not edited; to change it,"
                " define your providers in a config file",
            )

    async def create(self, provider: ProviderConfig, definition: dict[str, Any], actor: str) -> int:
        """Define a new provider over the API and schedule it; return the position of its
        registration."""
        async with self._applying:
            await self._refresh()
            name = provider.name
            for existing, entry in self.book.items():
                if existing.casefold() != name.casefold():
                    continue
                if entry.current or existing in self.providers:
                    where = self.sources.get(existing) or f"recorded by {entry.registered_by}"
                    raise DefinitionRefused(
                        409,
                        "provider-exists",
                        "Provider exists",
                        f"provider {existing!r} exists already ({where});"
                        f" change it with PUT /api/providers/{existing}",
                    )
                if entry.disabled and entry.source == "catalogue":
                    raise DefinitionRefused(
                        409,
                        "provider-exists",
                        "Provider exists",
                        f"provider {existing!r} is a catalogue provider, disabled: resume it"
                        f" with POST /api/providers/{existing}/resume",
                    )
            for existing in self.providers:  # the file's, recorded or not
                if existing.casefold() == name.casefold():
                    raise DefinitionRefused(
                        409,
                        "provider-exists",
                        "Provider exists",
                        f"provider {existing!r} exists already ({self.sources[existing]})",
                    )
            registration = registration_of(provider, self.environ, "api", definition)
            return await self._change(name, registration, actor, None)

    async def replace(
        self, provider: ProviderConfig, definition: dict[str, Any], actor: str, if_match: IfMatch
    ) -> int:
        """Change a provider defined over the API; `if_match` is the version the client
        read. Its runs in flight finish first."""
        async with self._applying:
            await self._refresh()
            self.check_changeable(provider.name, "change")
            registration = registration_of(provider, self.environ, "api", definition)
            return await self._change(provider.name, registration, actor, if_match)

    async def delete(self, name: str, actor: str, if_match: IfMatch | None) -> int:
        """Stop probing a provider defined over the API (or disable a catalogue one); its
        history stays. Its runs in flight finish first."""
        async with self._applying:
            await self._refresh()
            self.check_changeable(name, "delete")
            removal = ProviderRemoved(name, over_api=True)
            return await self._change(name, removal, actor, if_match)

    async def pause(self, name: str, actor: str) -> int:
        async with self._applying:
            await self._refresh()
            entry = self._entry(name)
            if entry.paused:
                raise DefinitionRefused(
                    409, "already-paused", "Already paused", f"provider {name!r} is paused already"
                )
            paused = ProviderPaused(name, actor, self.clock.time())
            return await self._change(name, paused, actor, None)

    async def resume(self, name: str, actor: str) -> int:
        """Probe a paused provider again, or a catalogue provider deleted (disabled) over
        the API."""
        async with self._applying:
            await self._refresh()
            entry = self.book.get(name)
            catalogue = {p.name: p for p in self.config.providers}
            if (
                entry is not None
                and entry.disabled
                and self.config.providers_source == "catalogue"
                and name in catalogue
            ):
                registration = registration_of(catalogue[name], self.environ, "catalogue")
                return await self._change(name, registration, actor, None)
            entry = self._entry(name)
            if not entry.paused:
                raise DefinitionRefused(
                    409, "not-paused", "Not paused", f"provider {name!r} is not paused"
                )
            resumed = ProviderResumed(name, actor, self.clock.time())
            return await self._change(name, resumed, actor, None)

    async def _change(
        self,
        name: str,
        event: ProviderRegistered | ProviderRemoved | ProviderPaused | ProviderResumed,
        actor: str,
        if_match: IfMatch | None,
    ) -> int:
        """Append one configuration event to the provider's stream, at the version the
        book read, then schedule from the log again. An `if_match` that is not the
        provider's version is a 412; another writer meanwhile is a 412 for one that named
        a version, a 409 otherwise. The provider's runs in flight finish before the event
        is recorded."""
        entry = self.book.get(name)
        if entry is not None and if_match is not None and not if_match.matches(entry.position):
            raise _stale(name, entry.position)
        in_flight = self.scheduler.remove_tasks(name)
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        try:
            [position] = await self.store.append(
                registration_stream(name),
                [event],
                expected_version=0 if entry is None else entry.version,
                metadata=EventMetadata(actor=actor),
            )
        except ConcurrencyError:
            if if_match is not None:
                raise _stale(name, None) from None
            raise DefinitionRefused(
                409,
                "changed-meanwhile",
                "Changed meanwhile",
                f"provider {name!r} was changed by another request meanwhile: GET it, then"
                " try again",
            ) from None
        finally:
            self.book = await read_book(self.store)
            await self._settle(replan=name)
        return position

    # ---- recording -------------------------------------------------------------

    async def register_maintenance(self) -> int:
        """Record each `[[maintenance]]` window of the file whose definition differs from
        the one last recorded, and cancel each window from the file that it no longer has;
        return how many events were recorded."""
        recorded = 0
        for window in self.config.maintenance:
            window_id = file_window_id(window.name)
            event = window_of(window, window_id, "file")
            recorded += await self._register(maintenance_stream(window_id), event)
        configured = {file_window_id(window.name) for window in self.config.maintenance}
        events = await self.store.read_by_type(
            ["MaintenanceWindowScheduled", "MaintenanceWindowCancelled"],
            limit=_ALL,
            newest_first=False,
        )
        open_ids: set[str] = set()
        for found in events:
            fact = found.event
            if isinstance(fact, MaintenanceWindowScheduled) and fact.source == "file":
                open_ids.add(fact.window_id)
            elif isinstance(fact, MaintenanceWindowCancelled):
                open_ids.discard(fact.window_id)
        for window_id in sorted(open_ids - configured):
            cancel = MaintenanceWindowCancelled(window_id, "config", self.clock.time())
            recorded += await self._append_once(maintenance_stream(window_id), cancel)
        return recorded

    async def _append_once(self, stream: str, event: MaintenanceWindowCancelled) -> int:
        """Append `event` unless the stream's last event is a cancellation already."""
        while True:
            version = await self.store.stream_version(stream)
            if version:
                [last] = await self.store.read_stream(stream, after_version=version - 1, limit=1)
                if isinstance(last.event, MaintenanceWindowCancelled):
                    return 0
            try:
                await self.store.append(
                    stream,
                    [event],
                    expected_version=version,
                    metadata=EventMetadata(actor=self.config_actor),
                )
                return 1
            except ConcurrencyError:
                continue

    async def _register(
        self, stream: str, registration: MaintenanceWindowScheduled | MonitoringChanged
    ) -> int:
        """Append `registration` unless it is what the stream last recorded."""
        while True:
            version = await self.store.stream_version(stream)
            if version:
                [last] = await self.store.read_stream(stream, after_version=version - 1, limit=1)
                if last.event == registration:
                    return 0
            try:
                await self.store.append(
                    stream,
                    [registration],
                    expected_version=version,
                    metadata=EventMetadata(actor=self.config_actor),
                )
                return 1
            except ConcurrencyError:
                continue  # another instance registered it meanwhile: compare with theirs

    async def _record_definition(self, definition: ProviderRegistered | ProviderRemoved) -> int:
        """Append what this instance's file says of a provider unless the book's last
        registration or removal says the same (pauses and resumes are no definition). When
        the last came from another running instance's file, a difference is a conflict:
        reported, not recorded, so two instances never take turns rewriting it."""
        name = definition.provider
        while True:
            if self._agrees(definition):
                self.conflicts.pop(name, None)
                return 0
            entry = self.book.get(name)
            if (
                entry is not None
                and entry.current
                and entry.source != "api"
                and self.peers is not None
                and self.peers.is_live_peer(entry.registered_by)
            ):
                if self._agrees(definition, keys_count=False):
                    self.conflicts.pop(name, None)
                    return 0  # the same file; the other instance's environment has its key
                differs = (
                    "does not define it"
                    if isinstance(definition, ProviderRemoved)
                    else "defines it differently"
                )
                self.conflicts[name] = (
                    f"provider {name!r}: the file of {entry.registered_by}, which is running,"
                    f" defines it, and this instance's file ({self.config.source}) {differs};"
                    " the recorded definition stands. Make the files agree, then reload"
                )
                log.warning("config conflict: %s", self.conflicts[name], extra={"provider": name})
                return 0
            self.conflicts.pop(name, None)
            try:
                await self.store.append(
                    registration_stream(name),
                    [definition],
                    expected_version=0 if entry is None else entry.version,
                    metadata=EventMetadata(actor=self.config_actor),
                )
                return 1
            except ConcurrencyError:
                # Another instance recorded one meanwhile: compare with theirs.
                self.book = await read_book(self.store)

    async def trigger(self, job_id: str, actor: str) -> int:
        """Run a job now, recording who asked; return how many tasks ran."""
        known = self.scheduler.job_ids()
        if job_id not in known:
            raise UnknownJobError(job_id, known)
        await self.store.append(
            f"job:{job_id}",
            [JobTriggered(job_id=job_id, actor=actor, triggered_at=self.clock.time())],
            metadata=EventMetadata(actor=actor),
        )
        return await self.scheduler.run_now(job_id)

    # ---- rate limits across regions ------------------------------------------

    def _regions_spending(self, provider: ProviderConfig) -> int:
        """How many regions spend `provider`'s key: those its config names, else every
        region with a live instance. Without a region, this instance's count is the key's."""
        if self.region is None:
            return 1
        return len(provider.regions) if provider.regions else self.live_regions

    def _tracker(self, provider: ProviderConfig) -> RateLimitTracker:
        limit = provider.rate_limit
        return RateLimitTracker(
            provider.name,
            limit.requests if limit else None,
            limit.per_seconds if limit else DEFAULT_WINDOW_SECONDS,
            region=self.region,
            regions=self._regions_spending(provider),
        )

    def set_live_regions(self, count: int) -> None:
        """The number of regions with a live instance changed (the leases saw it): each
        provider naming no regions is budgeted its new share of its key."""
        self.live_regions = max(1, count)
        for provider in self.probed:
            tracker = self.trackers.get(provider.name)
            if tracker is not None:
                tracker.share(self._regions_spending(provider))

    def _probe_action(self, target: ProbeTarget) -> Action:
        async def run(planned: float) -> None:
            await self._probe(target, planned)

        return run

    async def _probe(self, target: ProbeTarget, planned: float) -> None:
        provider = target.provider
        tracker = self.trackers[provider.name]
        if tracker.is_blocked(self.clock.time()):
            # The block itself was recorded when it began; count what it costs.
            self.counters.skipped_blocked += 1
            return
        events: list[Event] = []
        crossed = tracker.record_request(self.clock.time())
        result = await send_probe(
            self.session,
            target,
            self.environ,
            scheduled_at=planned,
            clock=self.clock.time,
            region=self.region,
        )
        events.append(result.event)
        if crossed is not None:
            events.append(crossed)
        changes = tracker.observe_response(
            result.event.http_status, result.headers, self.clock.time()
        )
        for change in changes:
            if change.reason == "blocked" and change.blocked_until is not None:
                log.info(
                    "%s asked us to back off for %.0f s; not probing it until then",
                    provider.name,
                    change.blocked_until - change.observed_at,
                    extra={"provider": provider.name},
                )
        events += changes
        await self._append(provider.name, events)

    async def _rate_limit_snapshot(self, planned: float) -> None:
        now = self.clock.time()
        for name, tracker in self.trackers.items():
            if not self.scheduler.owns(name):
                continue  # the instance probing it keeps its usage
            change = tracker.refresh(now)
            if change is not None:
                await self._append(name, [change])

    async def _append(self, provider: str, events: list[Event]) -> None:
        try:
            await self.store.append(provider_stream(provider), events, metadata=self.metadata)
        except StoreError:
            self.counters.lost += 1
            raise
        self.counters.appended += 1


def _stale(name: str, current: int | None) -> DefinitionRefused:
    now = f" (it is at {current})" if current is not None else ""
    return DefinitionRefused(
        412,
        "version-mismatch",
        "Precondition failed",
        f"provider {name!r} changed since the version named in If-Match{now}: GET it again,"
        " and retry with its ETag",
    )


def _schedule(provider: ProviderConfig) -> Schedule:
    if provider.cron is not None:
        return CronSchedule(provider.cron)
    interval = provider.interval_seconds
    assert interval is not None  # the config guarantees one of the two
    return IntervalSchedule(interval, spread_offset(provider.name, interval))
