"""Which regions report: `RegionJoined` and `RegionLost` on each region's stream.

An instance with a region records `RegionJoined` on `region:<name>` when it starts,
unless that stream's last event is one already (the append names the stream's version,
so two instances of a region starting together record it once). On PostgreSQL every
instance of a region holds a shared lock on it (leases.py, `REGION_LOCKS`); after each
lease round, every instance looks at the regions the log says joined and records
`RegionLost` for one whose lock nobody holds any more: its last instance's connection is
gone. Again the append names the version read, so of the survivors exactly one records
it (a `ConcurrencyError` means another did). An instance that finds its own region
recorded lost while it runs (it came back just as another saw it gone) joins again.

On a log one process writes (a SQLite file), no other instance can be running: a
region the log says joined that is not this instance's stopped reporting when that
instance did, and is recorded lost when this one starts.

The watch knows the regions from one read of the log at start and follows the region
events as the read models fold them (`recorded`); it reads a region's stream again only
before it appends to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptomon.events.log import ConcurrencyError, EventLog
from cryptomon.events.types import EventMetadata, RecordedEvent, RegionJoined, RegionLost
from cryptomon.probing.leases import ProviderLeases, region_key

log = logging.getLogger(__name__)

REGION_EVENT_TYPES = ("RegionJoined", "RegionLost")
# Region events are few (one per start and loss): read them all at once.
_ALL = 1_000_000


def region_stream(region: str) -> str:
    return f"region:{region}"


@dataclass(frozen=True, slots=True)
class RegionState:
    """A region's stream as last seen: its version, and whether it ends joined."""

    version: int
    joined: bool


class RegionWatch:
    """Records this instance's region joining, and other regions lost (see the module)."""

    def __init__(
        self,
        store: EventLog,
        *,
        region: str | None,
        instance: str,
        leases: ProviderLeases | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.region = region
        self.instance = instance
        self.leases = leases
        self.clock = clock
        # Each region the log has an event of, as last seen.
        self.known: dict[str, RegionState] = {}

    def name(self) -> str:
        """This instance as region events name it: on PostgreSQL with its lock, so another
        instance can tell whether it still runs (`ProviderLeases.is_live_peer`)."""
        return self.instance + (self.leases.name() if self.leases is not None else "")

    def _metadata(self) -> EventMetadata:
        return EventMetadata(actor=f"regions@{self.name()}")

    async def start(self) -> None:
        """Learn the regions from the log, then join this instance's region. On PostgreSQL,
        call it once the leases hold the region's lock (`ProviderLeases.start`)."""
        for recorded in await self.store.read_by_type(
            list(REGION_EVENT_TYPES), limit=_ALL, newest_first=False
        ):
            self.recorded(recorded)
        if self.store.single_writer:
            # Nobody else writes this log: another region's instance is not running.
            for region, state in sorted(self.known.items()):
                if state.joined and region != self.region:
                    await self._lose(region, check_locks=False)
        if self.region is not None:
            await self.join()
        elif self.known:
            # Its lock keys are the names alone: it probes every provider beside the
            # regions' instances, and its probes judge the provider apart from theirs.
            log.warning(
                "this instance has no region, but the log's instances probe from regions"
                " (%s): give it one ([instance] region or --region), or its probes and the"
                " regions' will both judge each provider",
                ", ".join(sorted(self.known)),
            )

    def recorded(self, recorded: RecordedEvent) -> None:
        """Follow a region event appended to the log (by any instance)."""
        event = recorded.event
        if not isinstance(event, RegionJoined | RegionLost):
            return
        if recorded.stream != region_stream(event.region):
            log.warning(
                "%s of region %s at position %d is on stream %r, not %r: not followed",
                type(event).__name__, event.region, recorded.position, recorded.stream,
                region_stream(event.region),
            )  # fmt: skip
            return
        self._see(event.region, recorded.version, isinstance(event, RegionJoined))

    def _see(self, region: str, version: int, joined: bool) -> None:
        state = self.known.get(region)
        if state is None or version > state.version:
            self.known[region] = RegionState(version, joined)

    async def _last(self, region: str) -> RegionState | None:
        """The region's stream as it is now (None: no event), read from the log."""
        stream = region_stream(region)
        version = await self.store.stream_version(stream)
        if not version:
            return None
        [last] = await self.store.read_stream(stream, after_version=version - 1, limit=1)
        state = RegionState(last.version, isinstance(last.event, RegionJoined))
        self._see(region, state.version, state.joined)
        return state

    async def join(self) -> bool:
        """Record `RegionJoined` for this instance's region unless its stream ends with
        one already; whether this call recorded it."""
        region = self.region
        assert region is not None
        while True:
            state = await self._last(region)
            if state is not None and state.joined:
                return False
            version = 0 if state is None else state.version
            event = RegionJoined(region, self.name(), self.clock())
            try:
                await self.store.append(
                    region_stream(region),
                    [event],
                    expected_version=version,
                    metadata=self._metadata(),
                )
            except ConcurrencyError:
                continue  # another instance of the region meanwhile: look at theirs
            self._see(region, version + 1, True)
            log.info("region %s joined (%s)", region, self.name())
            return True

    async def check(self) -> None:
        """After a lease round: record `RegionLost` for each region the log says joined
        whose lock no live instance holds, and join again if the log says this instance's
        region is lost while it runs."""
        leases = self.leases
        if leases is None or leases.live_regions is None:
            return  # no lease connection: this instance cannot tell who is live
        live = leases.live_regions
        if self.region is not None:
            own = self.known.get(self.region)
            if own is None or not own.joined:
                await self.join()
        for region, state in sorted(self.known.items()):
            if state.joined and region != self.region and region_key(region) not in live:
                await self._lose(region)

    async def _lose(self, region: str, *, check_locks: bool = True) -> bool:
        """Record `RegionLost` for `region` if its stream still ends joined and (with
        `check_locks`) no live instance holds its lock, read now; whether this call did."""
        state = await self._last(region)
        if state is None or not state.joined:
            return False
        if check_locks:
            assert self.leases is not None
            live = await self.leases.regions_now()
            if live is None or region_key(region) in live:
                return False
        event = RegionLost(region, self.name(), self.clock())
        try:
            await self.store.append(
                region_stream(region),
                [event],
                expected_version=state.version,
                metadata=self._metadata(),
            )
        except ConcurrencyError:
            return False  # another survivor recorded it, or the region came back
        self._see(region, state.version + 1, False)
        log.warning("region %s stopped reporting: its last instance is gone", region)
        return True
