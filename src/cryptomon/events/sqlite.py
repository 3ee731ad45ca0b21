"""The SQLite event store: the embedded default, one file and one writing process.

One writer task owns all writes (`core.QueuedLog`): callers enqueue appends; the writer
takes everything queued, checks each call on its own (expected version, retried event
ids), and commits the accepted ones in one transaction (`BEGIN IMMEDIATE`,
`executemany`, `COMMIT`). A caller's `append` returns only after its events are
committed. Reads and subscriptions are `core`'s, over a second, query-only connection.

Only here: `exclusive` (work on the writer's connection between commits, which the
notification outbox and retention use).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from cryptomon.events.archive import archive_dir
from cryptomon.events.core import COLUMNS, Append, BetweenCommits, Queries, QueuedLog, plan_batch
from cryptomon.events.log import StoreClosedError, StoreError, StoreLockedError, StoreWriteError
from cryptomon.events.migrations import (
    SchemaError,
    applied_version,
    check_not_newer,
    load_migrations,
    migrate,
)

_INSERT = f"INSERT INTO events ({COLUMNS}, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ID_LOOKUP_CHUNK = 500
T = TypeVar("T")


def _reason(exc: BaseException) -> str:
    """SQLite's message with its error code (SQLITE_BUSY, SQLITE_FULL, SQLITE_IOERR_WRITE...),
    which tells an operator a lock, a full disk and a read-only file apart."""
    code = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({code})" if code else str(exc)


class EventStore(QueuedLog):
    """The append-only event log in one SQLite file.

    Open it with `await EventStore.open(path)`; only one writing process may
    hold a database at a time. `readonly=True` opens it for audits next to a
    running service.
    """

    # The shared queries are written in SQLite's spelling already.
    queries = Queries(str, high_water="SELECT seq FROM sqlite_sequence WHERE name = 'events'")
    path: Path  # always a file
    single_writer = True  # the file's lock (`_take_lock`)
    supports_exclusive = True

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
        max_batch: int = 5000,
        ring_capacity: int = 8192,
        busy_timeout_ms: int = 5000,
        archive: Path | None = None,
    ) -> None:
        super().__init__(
            readonly=readonly, clock=clock, max_batch=max_batch, ring_capacity=ring_capacity
        )
        self.path = path
        self.archive = archive if archive is not None else archive_dir(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None
        self._last_recorded_at = 0.0
        self._stream_versions: dict[str, int] = {}

    # ---- lifecycle -----------------------------------------------------------

    @classmethod
    async def open(cls, path: Path | str, **options: Any) -> EventStore:
        return await cls(Path(path), **options)._opened()

    async def _open(self) -> None:
        if self.readonly:
            if not self.path.exists():
                raise StoreError(f"no database at {self.path}")
            self._reader = await aiosqlite.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None
            )
            version = await applied_version(self._reader)
            known = load_migrations()
            check_not_newer(self.path, version, known)
            if version < known[-1].version:
                raise SchemaError(
                    f"{self.path} has schema version {version}; start the service once "
                    f"to migrate it to {known[-1].version}"
                )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            self._writer_conn = await aiosqlite.connect(self.path, isolation_level=None)
            await self._writer_conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged append survives power loss, not only a crash.
            await self._writer_conn.execute("PRAGMA synchronous = FULL")
            await self._writer_conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await migrate(self._writer_conn, self.path)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA query_only = 1")
        await self._reader.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        async with self._reader.execute(
            "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1"
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None:
            self._head, self._last_hash, self._last_recorded_at = row
        if not self.readonly:
            self._writer_task = asyncio.create_task(self._writer_loop(), name="event-writer")

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"{self.path} is in use by another cryptomon process (pid {holder}); "
                "one writer per database file"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    async def _release(self) -> None:
        for conn in (self._writer_conn, self._reader):
            if conn is not None:
                await conn.close()
        self._writer_conn = self._reader = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def location(self) -> str:
        """Where the log lives, fit to show in responses and log lines."""
        return str(self.path)

    def size_bytes(self) -> int:
        files = (self.path, self.path.with_name(self.path.name + "-wal"))
        return sum(f.stat().st_size for f in files if f.exists())

    def _reason(self, exc: BaseException) -> str:
        return _reason(exc)

    # ---- appending -----------------------------------------------------------

    async def exclusive(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work` on the writer connection, between commits, so maintenance
        (snapshots, archiving) never interleaves with an append's transaction."""
        if self._closing or self._writer_task is None:
            raise StoreClosedError(f"the event store for {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(BetweenCommits(functools.partial(self._run_exclusive, work, future)))
        return await future

    async def _run_exclusive(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], future: asyncio.Future[T]
    ) -> None:
        assert self._writer_conn is not None
        try:
            result = await work(self._writer_conn)
        except Exception as exc:
            if self._writer_conn.in_transaction:
                with contextlib.suppress(Exception):
                    await self._writer_conn.execute("ROLLBACK")
            if not future.done():
                future.set_exception(
                    StoreWriteError(f"write to {self.path} failed: {_reason(exc)}")
                )
            return
        # A caller cancelled while waiting has left: setting its future would raise, and
        # kill the writer with it.
        if not future.done():
            future.set_result(result)

    async def _existing_positions(self, event_ids: list[str]) -> dict[str, int]:
        assert self._writer_conn is not None
        found: dict[str, int] = {}
        for start in range(0, len(event_ids), _ID_LOOKUP_CHUNK):
            chunk = event_ids[start : start + _ID_LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            async with self._writer_conn.execute(
                f"SELECT event_id, position FROM events WHERE event_id IN ({marks})", chunk
            ) as cursor:
                found.update({event_id: position async for event_id, position in cursor})
        return found

    async def _stream_version(self, stream: str) -> int:
        version = self._stream_versions.get(stream)
        if version is None:
            assert self._writer_conn is not None
            async with self._writer_conn.execute(self.queries.stream_version, (stream,)) as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            self._stream_versions[stream] = version
        return version

    async def _commit(self, batch: list[Append]) -> None:
        """Check each append on its own, then commit the accepted ones together."""
        existing = await self._existing_positions([i for r in batch for i in r.event_ids])
        versions = {
            stream: await self._stream_version(stream) for stream in {r.stream for r in batch}
        }
        recorded_at = max(self._clock(), self._last_recorded_at)
        plan = plan_batch(batch, existing, versions, self._head, self._last_hash, recorded_at)
        if not plan.accepted:
            return
        try:
            await self._write_rows(plan.rows)
        except sqlite3.IntegrityError:
            if len(plan.accepted) == 1:
                raise
            await self._commit_each(plan)
            return
        self._last_recorded_at = recorded_at
        self._stream_versions.update(plan.versions)
        self._committed(plan)

    async def _write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self._writer_conn
        assert conn is not None
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.executemany(_INSERT, rows)
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
            raise

    async def save_snapshots(self, states: dict[str, tuple[int, bytes]], position: int) -> None:
        """Store each read model's (version, state) as covering `position`, all
        in one transaction."""
        rows = self._snapshot_rows(states, position)

        async def write(conn: aiosqlite.Connection) -> None:
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            await conn.execute("COMMIT")

        await self.exclusive(write)

    @contextlib.asynccontextmanager
    async def archiving(self) -> AsyncIterator[bool]:
        # The file's lock makes this the only process writing the log: nobody else archives.
        yield True

    async def delete_positions(self, positions: Sequence[int]) -> None:
        """Remove rows that have been archived elsewhere (retention)."""

        async def delete(conn: aiosqlite.Connection) -> None:
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany(
                "DELETE FROM events WHERE position = ?", [(p,) for p in positions]
            )
            await conn.execute("COMMIT")

        await self.exclusive(delete)

    # ---- reading (the paths themselves are `core`'s) -------------------------

    async def _fetch_rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if self._reader is None:
            raise StoreClosedError(f"the event store for {self.path} is closed")
        async with self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())
