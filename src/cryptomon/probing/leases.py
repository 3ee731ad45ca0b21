"""Which providers this instance probes when several instances share one PostgreSQL log.

Each instance holds a PostgreSQL advisory lock naming itself (keyed by its lease
connection's backend pid), so the live instances are exactly the holders of such
locks: when an instance dies its connection closes and its locks vanish at once,
with no heartbeat to time out. Every provider has a lock too. Each round, every
instance works out the same assignment by rendezvous hashing over the live
instances, releases providers assigned elsewhere and tries to lock its own. A lock
is held by at most one session, so no provider is probed by two instances; a dead
instance's providers are locked by the others on their next round.

The providers an instance offers to probe follow its configuration (`track`): the
file's and those the log defines. It says so with a shared lock on each (`WANT_LOCKS`),
and a provider is assigned among the live instances that want it, so where instances'
files differ no provider is assigned to one that would not probe it.

Configuration events name the instance that recorded them by its lock (`name`), so
another instance can tell whether the one that recorded a definition still runs
(`is_live_peer`): two running instances whose files disagree are a conflict, reported.

Regions: an instance with a region keys its provider and want locks by region and
name (`provider_key`), so the instances of one region divide that region's providers
among themselves and every region probes every provider. It also holds a shared lock
on its region (`REGION_LOCKS`, keyed by `region_key`): the regions with a live
instance are the keys held there (`live_regions`), which the region watch
(regions.py) and the rate-limit shares (`on_regions`) follow. Without a region the
keys are the provider's name alone, as they always were.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Iterable

import asyncpg

from cryptomon.events.postgres import COMMAND_TIMEOUT_SECONDS, LOCK_SESSION_KEEPALIVES

log = logging.getLogger(__name__)

# The first key of each advisory lock: what kind of thing the second key names.
INSTANCE_LOCKS = 0x636D0001
PROVIDER_LOCKS = 0x636D0002
WANT_LOCKS = 0x636D0003
# 0x636D0004: notification channels (notify/postgres.py); 0x636D0005: the archive.
REGION_LOCKS = 0x636D0006
ROUND_SECONDS = 1.0
# The longest a round's follower (`after_round`, the region watch) may take.
AFTER_ROUND_TIMEOUT_SECONDS = 10.0

_HELD_LOCKS = """
SELECT objid::bigint, pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1 AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_PEER = re.compile(r"#pg([0-9]+)$")


def _key(text: str) -> int:
    return zlib.crc32(text.encode()) - (1 << 31)


def provider_key(name: str, region: str | None = None) -> int:
    """A provider's lock key in a region (or with none): a stable signed 32-bit number
    (names that collide share one lock, so they are always probed by the same instance)."""
    return _key(name if region is None else f"{region}\0{name}")


def region_key(region: str) -> int:
    """A region's key among the `REGION_LOCKS`."""
    return _key(region)


def _signed(objid: int) -> int:
    """A lock's second key as `provider_key` gave it: pg_locks shows it as an unsigned oid."""
    return objid - (1 << 32) if objid >= 1 << 31 else objid


def assigned_instance(name: str, instances: Iterable[int]) -> int:
    """Rendezvous hashing: every instance computes the same owner from the same live set,
    and an instance leaving moves only its own providers."""
    return max(instances, key=lambda i: hashlib.sha256(f"{i}/{name}".encode()).digest())


class ProviderLeases:
    """`owns(name)` says whether this instance probes `name` right now."""

    def __init__(self, url: str, providers: Iterable[str], region: str | None = None) -> None:
        self._url = url
        self.region = region
        self._keys = {name: provider_key(name, region) for name in providers}
        self._held: set[int] = set()
        self._wants: set[int] = set()  # the providers this session holds a want lock of
        self._conn: asyncpg.Connection | None = None
        self._instance: int | None = None
        self._live: frozenset[int] = frozenset()  # the instances alive at the last round
        # The regions with a live instance at the last round (their `region_key`s); None
        # while this instance has no lease connection (it cannot tell).
        self.live_regions: frozenset[int] | None = None
        # Called with the number of live regions when it changes (the rate-limit shares).
        self.on_regions: Callable[[int], None] | None = None
        # Run after each round on the leases' task (the region watch), its failures logged.
        self.after_round: Callable[[], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set after each round; tests wait on it

    def owns(self, name: str) -> bool:
        key = self._keys.get(name)
        return key is not None and key in self._held

    @property
    def instance(self) -> int | None:
        return self._instance

    def track(self, providers: Iterable[str]) -> None:
        """Offer to probe exactly these providers from the next round on."""
        self._keys = {name: provider_key(name, self.region) for name in providers}

    def name(self) -> str:
        """This instance as configuration events name it (its lock, while it holds one)."""
        return "" if self._instance is None else f"#pg{self._instance}"

    def is_live_peer(self, actor: str | None) -> bool:
        """Whether `actor` names another instance that was alive at the last round."""
        match = _PEER.search(actor or "")
        return (
            match is not None and int(match[1]) != self._instance and (int(match[1]) in self._live)
        )

    async def start(self) -> None:
        await self.rebalance()
        self._task = asyncio.create_task(self._rounds(), name="provider-leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._disconnect()

    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(ROUND_SECONDS)
            try:
                await self.rebalance()
            except Exception as exc:  # any failure: this task must live on
                # Without the connection no lock is ours any more: probe nothing until back.
                log.warning("provider leases lost (%s); reconnecting", type(exc).__name__)
                await self._disconnect()
                continue
            await self._follow_round()

    async def _follow_round(self) -> None:
        if self.after_round is None:
            return
        try:
            async with asyncio.timeout(AFTER_ROUND_TIMEOUT_SECONDS):
                await self.after_round()
        except Exception as exc:  # the leases live on; the follower tries next round
            log.warning("after a lease round: %s: %s", type(exc).__name__, exc)

    async def regions_now(self) -> frozenset[int] | None:
        """The regions with a live instance as PostgreSQL sees them now (None without the
        lease connection); for the leases' own task (`after_round`) only: the connection
        runs one command at a time."""
        if self._conn is None or self._conn.is_closed():
            return None
        rows = await self._conn.fetch(_HELD_LOCKS, REGION_LOCKS)
        return frozenset(_signed(int(row[0])) for row in rows)

    async def rebalance(self) -> None:
        conn = await self._connection()
        assert self._instance is not None
        wants = set(self._keys.values())
        for key in self._wants - wants:
            await conn.execute("SELECT pg_advisory_unlock_shared($1, $2)", WANT_LOCKS, key)
            self._wants.discard(key)
        for key in wants - self._wants:
            await conn.execute("SELECT pg_advisory_lock_shared($1, $2)", WANT_LOCKS, key)
            self._wants.add(key)
        live = {int(row[0]) for row in await conn.fetch(_HELD_LOCKS, INSTANCE_LOCKS)}
        live.add(self._instance)  # pg_locks lags nothing, but be sure we count
        self._live = frozenset(live)
        regions = {_signed(int(row[0])) for row in await conn.fetch(_HELD_LOCKS, REGION_LOCKS)}
        if self.region is not None:
            regions.add(region_key(self.region))
        self._see_regions(frozenset(regions))
        wanting: dict[int, list[int]] = {}
        for row in await conn.fetch(_HELD_LOCKS, WANT_LOCKS):
            if row[1] in live:
                wanting.setdefault(_signed(int(row[0])), []).append(int(row[1]))
        mine = {
            key
            for name, key in self._keys.items()
            if assigned_instance(name, wanting.get(key) or [self._instance]) == self._instance
        }
        for key in self._held - mine:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", PROVIDER_LOCKS, key)
            self._held.discard(key)
        for key in mine - self._held:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", PROVIDER_LOCKS, key):
                self._held.add(key)
        self.changed.set()

    def _see_regions(self, regions: frozenset[int]) -> None:
        before = self.live_regions
        self.live_regions = regions
        if self.on_regions is not None and (before is None or len(before) != len(regions)):
            self.on_regions(len(regions))

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(
                self._url,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                server_settings=LOCK_SESSION_KEEPALIVES,
            )
            instance = int(await conn.fetchval("SELECT pg_backend_pid()"))
            await conn.execute("SELECT pg_advisory_lock($1, $2)", INSTANCE_LOCKS, instance)
            if self.region is not None:
                # Shared: every instance of the region holds it; it vanishes with the last.
                await conn.execute(
                    "SELECT pg_advisory_lock_shared($1, $2)", REGION_LOCKS, region_key(self.region)
                )
            self._conn, self._instance = conn, instance
            self._held, self._wants = set(), set()
        return self._conn

    async def _disconnect(self) -> None:
        self._held, self._wants = set(), set()
        self.live_regions = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None
