"""The probing side of the service: config in, events out.

`Monitor` registers the configured providers, schedules their health probes
and the seed's named collection jobs, counts every request against the
provider's rate limit, and appends each result to the event log. It keeps no
state a read model needs: projections build those from the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

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
    ProviderRegistered,
    ProviderRemoved,
    RateLimitSpec,
    WindowSource,
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
# Configuration events are one per provider and config change: read them all at once.
_ALL = 1_000_000
# Without a configured limit, provider headers still report usage per minute.
DEFAULT_WINDOW_SECONDS = 60.0


def provider_stream(name: str) -> str:
    return f"provider:{name}"


def registration_stream(name: str) -> str:
    return f"config:{name}"


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
    )


def registration_of(provider: ProviderConfig, environ: Mapping[str, str]) -> ProviderRegistered:
    """The provider's configuration as an event: the key's env var name, never the key."""
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
) -> ProbeResult:
    """Probe `target` once, with its key and env: headers read from `environ` now."""
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
    ) -> None:
        self.config = config
        # Probe results name the instance that recorded them: with several instances on
        # one log, an audit can tell who probed what.
        self.metadata = EventMetadata(
            actor=f"monitor@{instance or f'{socket.gethostname()}:{os.getpid()}'}"
        )
        self.store = store
        self.session = session
        self.clock: Clock = clock or SystemClock()
        self.environ = environ
        self.scheduler = Scheduler(self.clock, max_concurrency, owns)
        self.counters = ProbeCounters()
        self.probed = [p for p in config.providers if p.skip_reason(environ) is None]
        self.trackers = {p.name: _tracker(p) for p in self.probed}
        # One change of configuration at a time (`apply`).
        self._applying = asyncio.Lock()
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
            in_flight: list[asyncio.Task[None]] = []
            for name in (*changes.removed, *changes.changed):
                in_flight += self.scheduler.remove_tasks(name)
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            self.config = config
            self.probed = [p for p in config.providers if p.skip_reason(self.environ) is None]
            for name in changes.removed:
                self.trackers.pop(name, None)
            for provider in self.probed:
                if provider.name not in changes.added and provider.name not in changes.changed:
                    continue
                previous = old.get(provider.name)
                if provider.name not in self.trackers or (
                    previous is not None and previous.rate_limit != provider.rate_limit
                ):
                    self.trackers[provider.name] = _tracker(provider)
                self._plan_provider(provider)
            await self.register_providers()
            await self.register_monitoring()
            return changes

    @property
    def providers_probed(self) -> int:
        """How many providers this instance probes on schedule right now."""
        return sum(self.scheduler.owns(provider.name) for provider in self.probed)

    async def start(self) -> None:
        await self.register_providers()
        await self.register_maintenance()
        await self.register_monitoring()
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
        await self.scheduler.stop()

    async def register_providers(self) -> int:
        """Record each provider whose configuration differs from the last one recorded,
        and `ProviderRemoved` for each registered one the config no longer has (so it is
        not left behind as a ghost); return how many events were recorded."""
        recorded = 0
        for provider in self.config.providers:
            registration = registration_of(provider, self.environ)
            recorded += await self._register(registration_stream(provider.name), registration)
        configured = {provider.name for provider in self.config.providers}
        for name in await self._registered_names() - configured:
            recorded += await self._register(registration_stream(name), ProviderRemoved(name))
        return recorded

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
                    metadata=EventMetadata(actor="config"),
                )
                return 1
            except ConcurrencyError:
                continue

    async def _registered_names(self) -> set[str]:
        """Providers whose last configuration event is a registration, not a removal."""
        events = await self.store.read_by_type(
            ["ProviderRegistered", "ProviderRemoved"], limit=_ALL, newest_first=False
        )
        names: set[str] = set()
        for recorded in events:
            event = recorded.event
            if isinstance(event, ProviderRegistered):
                names.add(event.provider)
            elif isinstance(event, ProviderRemoved):
                names.discard(event.provider)
        return names

    async def _register(
        self,
        stream: str,
        registration: ProviderRegistered
        | ProviderRemoved
        | MaintenanceWindowScheduled
        | MonitoringChanged,
    ) -> int:
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
                    metadata=EventMetadata(actor="config"),
                )
                return 1
            except ConcurrencyError:
                continue  # another instance registered it meanwhile: compare with theirs

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
            self.session, target, self.environ, scheduled_at=planned, clock=self.clock.time
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


def _tracker(provider: ProviderConfig) -> RateLimitTracker:
    limit = provider.rate_limit
    return RateLimitTracker(
        provider.name,
        limit.requests if limit else None,
        limit.per_seconds if limit else DEFAULT_WINDOW_SECONDS,
    )


def _schedule(provider: ProviderConfig) -> Schedule:
    if provider.cron is not None:
        return CronSchedule(provider.cron)
    interval = provider.interval_seconds
    assert interval is not None  # the config guarantees one of the two
    return IntervalSchedule(interval, spread_offset(provider.name, interval))
