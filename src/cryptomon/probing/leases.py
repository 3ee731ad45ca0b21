"""Which providers this instance probes when several instances share one PostgreSQL log.

Each instance holds a PostgreSQL advisory lock naming itself (keyed by its lease
connection's backend pid), so the live instances are exactly the holders of such
locks: when an instance dies its connection closes and its locks vanish at once,
with no heartbeat to time out. Every provider has a lock too. Each round, every
instance works out the same assignment by rendezvous hashing over the live
instances, releases providers assigned elsewhere and tries to lock its own. A lock
is held by at most one session, so no provider is probed by two instances; a dead
instance's providers are locked by the others on their next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import zlib
from collections.abc import Iterable

import asyncpg

from cryptomon.events.postgres import COMMAND_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

# The first key of each advisory lock: what kind of thing the second key names.
INSTANCE_LOCKS = 0x636D0001
PROVIDER_LOCKS = 0x636D0002
ROUND_SECONDS = 1.0

_LIVE_INSTANCES = """
SELECT objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1 AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def provider_key(name: str) -> int:
    """A provider's lock key: a stable signed 32-bit number (names that collide share
    one lock, so they are always probed by the same instance)."""
    return zlib.crc32(name.encode()) - (1 << 31)


def assigned_instance(name: str, instances: Iterable[int]) -> int:
    """Rendezvous hashing: every instance computes the same owner from the same live set,
    and an instance leaving moves only its own providers."""
    return max(instances, key=lambda i: hashlib.sha256(f"{i}/{name}".encode()).digest())


class ProviderLeases:
    """`owns(name)` says whether this instance probes `name` right now."""

    def __init__(self, url: str, providers: Iterable[str]) -> None:
        self._url = url
        self._keys = {name: provider_key(name) for name in providers}
        self._held: set[int] = set()
        self._conn: asyncpg.Connection | None = None
        self._instance: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set after each round; tests wait on it

    def owns(self, name: str) -> bool:
        key = self._keys.get(name)
        return key is not None and key in self._held

    @property
    def instance(self) -> int | None:
        return self._instance

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

    async def rebalance(self) -> None:
        conn = await self._connection()
        live = [int(row[0]) for row in await conn.fetch(_LIVE_INSTANCES, INSTANCE_LOCKS)]
        assert self._instance is not None
        if self._instance not in live:  # pg_locks lags nothing, but be sure we count
            live.append(self._instance)
        wanted = {
            key
            for name, key in self._keys.items()
            if assigned_instance(name, live) == self._instance
        }
        for key in self._held - wanted:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", PROVIDER_LOCKS, key)
            self._held.discard(key)
        for key in wanted - self._held:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", PROVIDER_LOCKS, key):
                self._held.add(key)
        self.changed.set()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(self._url, command_timeout=COMMAND_TIMEOUT_SECONDS)
            instance = int(await conn.fetchval("SELECT pg_backend_pid()"))
            await conn.execute("SELECT pg_advisory_lock($1, $2)", INSTANCE_LOCKS, instance)
            self._conn, self._instance, self._held = conn, instance, set()
        return self._conn

    async def _disconnect(self) -> None:
        self._held = set()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None
