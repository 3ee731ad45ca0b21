"""The notification outbox on PostgreSQL, shared by every instance of one log
(migration 0002), and which instance derives and delivers each channel.

Each channel has an advisory lock; the instance holding it is the only one that derives
that channel's notices from the log and sends them. Every instance with channels tries
each lock it lacks once a second (`ROUND_SECONDS`), like the probing leases: the first
to start takes them, and when it dies its connection closes, its locks vanish, and
another instance takes them at its next round. Nothing is assigned elsewhere while its
holder lives, so a channel moves only when its holder is gone (a hot standby): no
handover to race with a request in flight.

The locks and every read and write of the outbox share one connection (one session), in
turn: a write that commits was made while this instance held its locks, and a failed one
ends the session (a timed-out statement leaves nobody sure the session lives), so its
locks go with it and this instance stops delivering at once; it tries again at the next
round. Two instances could then overlap only while PostgreSQL has not yet seen the old
session end; the outbox copes: inserts skip keys already stored, a checkpoint never moves
back, and a row marked delivered is never marked pending again. At worst a notification
is sent twice, with one idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

import asyncpg

from cryptomon.events.log import StoreWriteError, mask_url
from cryptomon.events.postgres import COMMAND_TIMEOUT_SECONDS, LOCK_SESSION_KEEPALIVES
from cryptomon.notify.outbox import ChannelCounts, Checkpoint, OutboxRow

log = logging.getLogger(__name__)

T = TypeVar("T")
# The advisory lock class of notification channels (probing/leases.py numbers 1 to 3,
# events/postgres.py the archive's 5).
CHANNEL_LOCKS = 0x636D0004
ROUND_SECONDS = 1.0
_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

# One statement for a batch (its rows as arrays); the keys it returns are those inserted.
_INSERT = (
    "INSERT INTO outbox (idempotency_key, channel, position, payload, next_attempt_at,"
    " created_at) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[],"
    " $5::float8[], $6::float8[]) ON CONFLICT (idempotency_key) DO NOTHING"
    " RETURNING idempotency_key"
)
# Forward only: an instance that lost the lock unawares must not move it back.
_CHECKPOINT = (
    "INSERT INTO notification_checkpoint (channel, position, state, saved_at)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (channel) DO UPDATE SET position = EXCLUDED.position,"
    " state = EXCLUDED.state, saved_at = EXCLUDED.saved_at"
    " WHERE notification_checkpoint.position <= EXCLUDED.position"
)
_PENDING = (
    "SELECT idempotency_key, channel, position, payload, created_at, next_attempt_at, attempts"
    " FROM outbox WHERE status = 'pending' AND channel = ANY($1::text[])"
    " ORDER BY position, idempotency_key"
)


def channel_key(name: str) -> int:
    """A channel's lock key: a stable signed 32-bit number (names that collide share one
    lock, so one instance delivers both)."""
    return zlib.crc32(name.encode()) - (1 << 31)


class PostgresOutbox:
    """The outbox in the log's PostgreSQL database; `held` are the channels whose lock
    this instance holds."""

    def __init__(self, url: str, channels: Collection[str]) -> None:
        self._url = url  # holds the password: never shown
        self._keys = {name: channel_key(name) for name in channels}
        self._conn: asyncpg.Connection | None = None
        self._turn = asyncio.Lock()  # one statement at a time on the one session
        self._locked: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the last round failed
        self.held: frozenset[str] = frozenset()
        self.changed = asyncio.Event()

    @property
    def location(self) -> str:
        return mask_url(self._url)

    async def start(self) -> None:
        """The first round now, so `held` is known before the notifier starts."""
        await self._round()
        self._task = asyncio.create_task(self._rounds(), name="notification-locks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._turn:
            await self._disconnect()

    async def forget(self) -> None:
        # Another instance may have channels and need every checkpoint: keep them all.
        pass

    # ---- the locks -----------------------------------------------------------------

    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(ROUND_SECONDS)
            await self._round()

    async def _round(self) -> None:
        """Take each channel's lock that is free, or see that the session holding them is
        still there. A failure is the session's end; the next session is opened a round
        later, which gives the other instances a round to take the locks first."""
        async with self._turn:
            try:
                if self._conn is not None and self._conn.is_closed():
                    raise ConnectionResetError("the session ended")
                if self._conn is None:
                    self._conn = await asyncpg.connect(
                        self._url,
                        command_timeout=COMMAND_TIMEOUT_SECONDS,
                        server_settings=LOCK_SESSION_KEEPALIVES,
                    )
                free = set(self._keys.values()) - self._locked
                for key in free:
                    if await self._conn.fetchval(
                        "SELECT pg_try_advisory_lock($1, $2)", CHANNEL_LOCKS, key
                    ):
                        self._locked.add(key)
                if not free:
                    # Nothing to ask for, but the session must still be there: its locks are.
                    await self._conn.fetchval("SELECT 1")
                self._failing = False
            except _ERRORS as exc:
                # Only the type: the text could quote the connection string. Said once,
                # not every round while the database is away.
                log.log(
                    logging.DEBUG if self._failing else logging.WARNING,
                    "notifications: no session on %s (%s); no channel is delivered here until"
                    " one is back",
                    self.location,
                    type(exc).__name__,
                )
                self._failing = True
                await self._disconnect()
            self._publish()

    def _publish(self) -> None:
        held = frozenset(name for name, key in self._keys.items() if key in self._locked)
        if held != self.held:
            self.held = held
            self.changed.set()

    async def _disconnect(self) -> None:
        """End the session: every lock goes with it."""
        conn, self._conn = self._conn, None
        self._locked.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
        self._publish()

    async def _run(self, what: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self._turn:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise StoreWriteError(f"{what}: no connection to {self.location}")
            try:
                return await work(conn)
            except _ERRORS as exc:
                await self._disconnect()
                raise StoreWriteError(
                    f"{what} on {self.location} failed ({type(exc).__name__}); the channels'"
                    " locks are let go"
                ) from None

    # ---- the outbox ------------------------------------------------------------------

    async def load_checkpoints(self, channels: Collection[str]) -> dict[str, Checkpoint]:
        rows = await self._run(
            "reading the notification checkpoints",
            lambda conn: conn.fetch(
                "SELECT channel, position, state FROM notification_checkpoint"
                " WHERE channel = ANY($1::text[])",
                list(channels),
            ),
        )
        return {row[0]: Checkpoint(int(row[1]), bytes(row[2])) for row in rows}

    async def load_pending(self, channels: Collection[str]) -> list[OutboxRow]:
        rows = await self._run(
            "reading the outbox", lambda conn: conn.fetch(_PENDING, list(channels))
        )
        return [
            OutboxRow(key, channel, position, bytes(payload), created, due, attempts)
            for key, channel, position, payload, created, due, attempts in rows
        ]

    async def reminders(self, since_position: int) -> list[tuple[str, bytes]]:
        rows = await self._run(
            "reading the outbox's reminders",
            lambda conn: conn.fetch(
                "SELECT idempotency_key, payload FROM outbox WHERE position >= $1"
                " AND (idempotency_key LIKE '%:renotify:%'"
                " OR idempotency_key LIKE '%:incident_renotify:%')",
                since_position,
            ),
        )
        return [(row[0], bytes(row[1])) for row in rows]

    async def channel_counts(self) -> dict[str, ChannelCounts]:
        async def read(conn: asyncpg.Connection) -> dict[str, ChannelCounts]:
            counts: dict[str, ChannelCounts] = {}
            for channel, status, count, delivered_at in await conn.fetch(
                "SELECT channel, status, COUNT(*), MAX(delivered_at) FROM outbox"
                " WHERE status != 'pending' GROUP BY channel, status"
            ):
                entry = counts.setdefault(channel, ChannelCounts())
                if status == "delivered":
                    entry.delivered, entry.last_delivered_at = count, delivered_at
                else:
                    entry.failed = count
            for channel, last_error, at in await conn.fetch(
                "SELECT DISTINCT ON (channel) channel, last_error, last_attempt_at FROM outbox"
                " WHERE status != 'delivered' AND last_error IS NOT NULL"
                " ORDER BY channel, last_attempt_at DESC"
            ):
                entry = counts.setdefault(channel, ChannelCounts())
                entry.last_error, entry.last_error_at = last_error, at
            return counts

        return await self._run("counting the outbox", read)

    async def prune(self, before: float, up_to_position: int, channels: Collection[str]) -> int:
        status = await self._run(
            "pruning the outbox",
            lambda conn: conn.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND created_at < $1"
                " AND position <= $2 AND channel = ANY($3::text[])",
                before,
                up_to_position,
                list(channels),
            ),
        )
        return int(status.rpartition(" ")[2])

    async def store_rows(
        self,
        rows: Sequence[OutboxRow],
        checkpoint: Checkpoint | None,
        channels: Collection[str],
        now: float,
    ) -> list[OutboxRow]:
        async def store(conn: asyncpg.Connection) -> list[OutboxRow]:
            new: set[str] = set()
            async with conn.transaction():
                if rows:
                    columns = [
                        [row.key for row in rows],
                        [row.channel for row in rows],
                        [row.position for row in rows],
                        [row.payload for row in rows],
                        [row.next_attempt_at for row in rows],
                        [row.created_at for row in rows],
                    ]
                    new = {record[0] for record in await conn.fetch(_INSERT, *columns)}
                if checkpoint is not None:
                    await conn.executemany(
                        _CHECKPOINT,
                        [(name, checkpoint.position, checkpoint.state, now) for name in channels],
                    )
            return [row for row in rows if row.key in new]

        return await self._run("storing outbox rows", store)

    async def mark_delivered(self, key: str, attempts: int, at: float) -> None:
        await self._run(
            "marking a notification delivered",
            lambda conn: conn.execute(
                "UPDATE outbox SET status = 'delivered', attempts = GREATEST(attempts, $1),"
                " delivered_at = $2, last_attempt_at = $2 WHERE idempotency_key = $3",
                attempts,
                at,
                key,
            ),
        )

    async def mark_failed(self, row: OutboxRow, error: str, at: float, *, gave_up: bool) -> None:
        # Only a pending row: another instance may have delivered it meanwhile.
        await self._run(
            "recording a failed notification",
            lambda conn: conn.execute(
                "UPDATE outbox SET status = $1, attempts = $2, next_attempt_at = $3,"
                " last_error = $4, last_attempt_at = $5"
                " WHERE idempotency_key = $6 AND status = 'pending'",
                "failed" if gave_up else "pending",
                row.attempts,
                row.next_attempt_at,
                error,
                at,
                row.key,
            ),
        )
