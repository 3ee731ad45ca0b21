"""Where the notifier keeps its outbox and checkpoints (`Outbox`), and SQLite's outbox:
its tables in the log's own file (migration 0003), `SqliteOutbox`.

Every function here runs on the event store's writer connection through
`EventStore.exclusive`, between commits of the log, and writes in a
transaction of its own. `store_rows` inserts new rows with INSERT OR IGNORE
(a re-derived notice finds its key taken and is not queued twice) and, when
given one, the checkpoint in the same transaction: a checkpoint never covers
a notice whose row is not stored. PostgreSQL's outbox is `notify.postgres`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiosqlite

from cryptomon.events.log import EventLog, StoreError

_INSERT = (
    "INSERT OR IGNORE INTO outbox (idempotency_key, channel, position, payload, status,"
    " attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)"
)


@dataclass(slots=True)
class OutboxRow:
    key: str
    channel: str
    position: int
    payload: bytes  # the neutral Notification as JSON
    created_at: float
    next_attempt_at: float
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    position: int
    state: bytes  # msgpack of Projections.snapshot_state()


@dataclass(slots=True)
class ChannelCounts:
    delivered: int = 0
    failed: int = 0  # gave up
    last_delivered_at: float | None = None
    last_error: str | None = None  # of a row still pending or given up
    last_error_at: float | None = None


async def load_checkpoint(conn: aiosqlite.Connection) -> Checkpoint | None:
    async with conn.execute(
        "SELECT position, state FROM notification_checkpoint WHERE id = 1"
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else Checkpoint(int(row[0]), bytes(row[1]))


async def clear_checkpoint(conn: aiosqlite.Connection) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute("DELETE FROM notification_checkpoint")
    await conn.execute("COMMIT")


async def load_pending(conn: aiosqlite.Connection) -> list[OutboxRow]:
    async with conn.execute(
        "SELECT idempotency_key, channel, position, payload, created_at, next_attempt_at,"
        " attempts FROM outbox WHERE status = 'pending' ORDER BY position, idempotency_key"
    ) as cursor:
        return [
            OutboxRow(key, channel, position, bytes(payload), created, due, attempts)
            async for key, channel, position, payload, created, due, attempts in cursor
        ]


async def reminders(conn: aiosqlite.Connection, since_position: int) -> list[tuple[str, bytes]]:
    """(key, message) of every re-notification stored for an alert raised (or an incident
    opened) at or after `since_position` (a reminder's row has the position of the event
    that raised its alert, or opened its incident)."""
    async with conn.execute(
        "SELECT idempotency_key, payload FROM outbox WHERE position >= ?"
        " AND (idempotency_key LIKE '%:renotify:%'"
        " OR idempotency_key LIKE '%:incident_renotify:%')",
        (since_position,),
    ) as cursor:
        return [(key, bytes(payload)) async for key, payload in cursor]


async def channel_counts(conn: aiosqlite.Connection) -> dict[str, ChannelCounts]:
    counts: dict[str, ChannelCounts] = {}
    async with conn.execute(
        "SELECT channel, status, COUNT(*), MAX(delivered_at) FROM outbox"
        " WHERE status != 'pending' GROUP BY channel, status"
    ) as cursor:
        async for channel, status, count, delivered_at in cursor:
            entry = counts.setdefault(channel, ChannelCounts())
            if status == "delivered":
                entry.delivered = count
                entry.last_delivered_at = delivered_at
            else:
                entry.failed = count
    # The latest error per channel among rows not delivered, through the status index.
    async with conn.execute(
        "SELECT channel, last_error, MAX(last_attempt_at) FROM outbox"
        " WHERE status != 'delivered' AND last_error IS NOT NULL GROUP BY channel"
    ) as cursor:
        async for channel, last_error, at in cursor:
            entry = counts.setdefault(channel, ChannelCounts())
            entry.last_error, entry.last_error_at = last_error, at
    return counts


async def prune(conn: aiosqlite.Connection, before: float, up_to_position: int) -> int:
    """Drop finished rows created before `before`. Only rows the checkpoint covers: a row
    after it could be derived again after a crash, and must find its key taken."""
    await conn.execute("BEGIN IMMEDIATE")
    cursor = await conn.execute(
        "DELETE FROM outbox WHERE status != 'pending' AND created_at < ? AND position <= ?",
        (before, up_to_position),
    )
    await conn.execute("COMMIT")
    return cursor.rowcount


async def store_rows(
    conn: aiosqlite.Connection,
    rows: Sequence[OutboxRow],
    checkpoint: Checkpoint | None,
    now: float,
) -> list[OutboxRow]:
    """Insert `rows` (keys already stored are left alone) and save `checkpoint`, in one
    transaction; return the rows that were new."""
    inserted: list[OutboxRow] = []
    await conn.execute("BEGIN IMMEDIATE")
    for row in rows:
        cursor = await conn.execute(
            _INSERT,
            (row.key, row.channel, row.position, row.payload, row.next_attempt_at, row.created_at),
        )
        if cursor.rowcount == 1:
            inserted.append(row)
    if checkpoint is not None:
        await conn.execute(
            "INSERT OR REPLACE INTO notification_checkpoint (id, position, state, saved_at)"
            " VALUES (1, ?, ?, ?)",
            (checkpoint.position, checkpoint.state, now),
        )
    await conn.execute("COMMIT")
    return inserted


async def mark_delivered(conn: aiosqlite.Connection, key: str, attempts: int, at: float) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute(
        "UPDATE outbox SET status = 'delivered', attempts = ?, delivered_at = ?,"
        " last_attempt_at = ? WHERE idempotency_key = ?",
        (attempts, at, at, key),
    )
    await conn.execute("COMMIT")


async def mark_failed(
    conn: aiosqlite.Connection,
    row: OutboxRow,
    error: str,
    at: float,
    *,
    gave_up: bool,
) -> None:
    """One more failed attempt: retried at `row.next_attempt_at`, or given up."""
    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute(
        "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ?,"
        " last_attempt_at = ? WHERE idempotency_key = ?",
        ("failed" if gave_up else "pending", row.attempts, row.next_attempt_at, error, at, row.key),
    )
    await conn.execute("COMMIT")


class Outbox(Protocol):
    """The notifier's storage, and which of its channels this process derives and delivers
    now: `held`, which `changed` is set for whenever it changes. A checkpoint is kept per
    channel: the notifier's projections and the position up to which every notice of that
    channel is stored (on SQLite, one shared by every channel, all always held)."""

    held: frozenset[str]
    changed: asyncio.Event

    async def start(self) -> None:
        """Be ready, `held` known."""

    async def close(self) -> None:
        """Stop; the channels held are let go."""

    async def forget(self) -> None:
        """No channel is configured: drop what would make channels added later announce
        the past (where no other instance may need it)."""

    async def load_checkpoints(self, channels: Collection[str]) -> dict[str, Checkpoint]: ...

    async def load_pending(self, channels: Collection[str]) -> list[OutboxRow]: ...

    async def reminders(self, since_position: int) -> list[tuple[str, bytes]]: ...

    async def channel_counts(self) -> dict[str, ChannelCounts]: ...

    async def prune(self, before: float, up_to_position: int, channels: Collection[str]) -> int:
        """Drop finished rows of `channels` created before `before`, at or below
        `up_to_position` (which their checkpoints cover)."""

    async def store_rows(
        self,
        rows: Sequence[OutboxRow],
        checkpoint: Checkpoint | None,
        channels: Collection[str],
        now: float,
    ) -> list[OutboxRow]:
        """Insert `rows` (keys already stored are left alone) and `checkpoint` as that of
        `channels`, in one transaction; the rows that were new."""

    async def mark_delivered(self, key: str, attempts: int, at: float) -> None: ...

    async def mark_failed(
        self, row: OutboxRow, error: str, at: float, *, gave_up: bool
    ) -> None: ...


class SqliteOutbox:
    """The outbox in a SQLite log's file, written on its writer connection between commits.
    One process writes the file, so it holds every channel, always."""

    def __init__(self, store: EventLog, channels: Collection[str]) -> None:
        self.store = store
        self.held = frozenset(channels)
        self.changed = asyncio.Event()

    async def start(self) -> None:
        if self.held and not self.store.supports_exclusive:
            # The configuration gives a log on PostgreSQL the PostgreSQL outbox.
            raise StoreError(f"the event log at {self.store.location} has no SQLite outbox")

    async def close(self) -> None:
        pass

    async def forget(self) -> None:
        # Nobody to tell: forget the position, so channels added later start from then.
        if self.store.supports_exclusive:
            await self.store.exclusive(clear_checkpoint)

    async def load_checkpoints(self, channels: Collection[str]) -> dict[str, Checkpoint]:
        checkpoint = await self.store.exclusive(load_checkpoint)
        return {} if checkpoint is None else dict.fromkeys(channels, checkpoint)

    async def load_pending(self, channels: Collection[str]) -> list[OutboxRow]:
        return [row for row in await self.store.exclusive(load_pending) if row.channel in channels]

    async def reminders(self, since_position: int) -> list[tuple[str, bytes]]:
        return await self.store.exclusive(lambda conn: reminders(conn, since_position))

    async def channel_counts(self) -> dict[str, ChannelCounts]:
        return await self.store.exclusive(channel_counts)

    async def prune(self, before: float, up_to_position: int, channels: Collection[str]) -> int:
        # Every channel is held and shares the one checkpoint: prune them all.
        return await self.store.exclusive(lambda conn: prune(conn, before, up_to_position))

    async def store_rows(
        self,
        rows: Sequence[OutboxRow],
        checkpoint: Checkpoint | None,
        channels: Collection[str],
        now: float,
    ) -> list[OutboxRow]:
        return await self.store.exclusive(lambda conn: store_rows(conn, rows, checkpoint, now))

    async def mark_delivered(self, key: str, attempts: int, at: float) -> None:
        await self.store.exclusive(lambda conn: mark_delivered(conn, key, attempts, at))

    async def mark_failed(self, row: OutboxRow, error: str, at: float, *, gave_up: bool) -> None:
        await self.store.exclusive(lambda conn: mark_failed(conn, row, error, at, gave_up=gave_up))
