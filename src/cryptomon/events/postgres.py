"""The event store on PostgreSQL (asyncpg): the SQLite store's log and contract,
shared by several processes.

Every append locks the one row of `log_head` (SELECT ... FOR UPDATE) before it
reads the head position and last hash, and holds the lock until it commits: appends
from every process are serialised, positions are gap-free, and no reader can see
position N+1 before N is committed (N's transaction ended before N+1's began). The
hash chain needs exactly this order anyway. Within one process a writer task
group-commits concurrent appends, as the SQLite store does.

New positions reach every process by NOTIFY, sent inside the appending transaction
and so delivered on commit, and by a poll of `log_head` every `poll_interval`
seconds: a missed notification (a dropped listener connection, say) delays an event,
never loses it. Subscribers keep only a position and read forward, from a ring of
this process's own commits or from the database, so every process's live feed
carries every process's events.

Retention archives old probe events into segments in a configured directory
(`archive`); one instance at a time, under an advisory lock (`archiving`), since
every instance runs the daily job.

The URL's password is a secret: the store shows `location` (password masked) in
every message, and scrubs it from driver errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import asyncpg
import msgspec

from cryptomon.events.core import COLUMNS, Append, BatchPlan, Queries, QueuedLog, plan_batch
from cryptomon.events.log import (
    Snapshot,
    StoreClosedError,
    StoredRow,
    StoreError,
    StoreWriteError,
    mask_url,
    url_secrets,
)
from cryptomon.events.migrations import (
    SchemaError,
    check_not_newer,
    load_migrations,
    postgres_migrations_dir,
)
from cryptomon.events.types import event_label

log = logging.getLogger(__name__)

CHANNEL = "cryptomon_events"
# The advisory lock that keeps two instances starting at once from both migrating.
_MIGRATION_LOCK = 0x6372_7970_746F
# The advisory lock (class, key) the instance that archives holds (probing/leases.py and
# notify/postgres.py number the other classes).
ARCHIVE_LOCK = (0x636D0005, 0)
_COPY_COLUMNS = [*(name.strip() for name in COLUMNS.split(",")), "label"]
_LOCK_HEAD = "SELECT position, hash, recorded_at FROM log_head WHERE id = 1 FOR UPDATE"
_SET_HEAD = "UPDATE log_head SET position = $1, hash = $2, recorded_at = $3 WHERE id = 1"
_CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# A statement that takes longer fails (TimeoutError): after a silent network partition
# appends fail and /health says so, instead of piling up behind a write that never returns.
COMMAND_TIMEOUT_SECONDS = 30.0
# A session holding advisory locks (a channel's delivery, a provider's or a region's lease)
# cut off by the network leaves its backend waiting on a silent connection, the locks
# held, until TCP gives up on it: ask the server to probe the connection after 10 s of
# silence, so the others see the locks gone within about half a minute, not hours. (A
# killed holder's connection closes at once; over a unix socket these do nothing.)
LOCK_SESSION_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
                           "tcp_keepalives_count": "3"}  # fmt: skip


_PARAMETER = re.compile(r"\?( IS NULL)?")


def postgres_spelling(sql: str) -> str:
    """A shared query (`core.Queries`) in PostgreSQL's spelling: its `?` parameters
    numbered `$1`, `$2`... in order, and a parameter that is only tested for NULL given
    its type, which PostgreSQL cannot infer from `IS NULL` (the shared queries test only
    text parameters so)."""
    numbers = itertools.count(1)
    return _PARAMETER.sub(
        lambda m: f"${next(numbers)}" + ("::text IS NULL" if m.group(1) else ""), sql
    )


class PostgresEventStore(QueuedLog):
    """The append-only event log in a PostgreSQL database.

    Open it with `await PostgresEventStore.open(url)`. Unlike SQLite, any number of
    processes may write the same database at once. `readonly=True` opens it for
    audits (no writer, read-only transactions).
    """

    queries = Queries(postgres_spelling, high_water="SELECT position FROM log_head WHERE id = 1")

    def __init__(
        self,
        url: str,
        *,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
        max_batch: int = 5000,
        ring_capacity: int = 8192,
        poll_interval: float = 1.0,
        pool_size: int = 4,
        archive: Path | None = None,
        snapshot_owner: str = "",
    ) -> None:
        super().__init__(
            readonly=readonly, clock=clock, max_batch=max_batch, ring_capacity=ring_capacity
        )
        self.archive = archive
        self._url = url  # holds the password: never shown; `location` is what is shown
        self._poll_interval = poll_interval
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._writer_conn: asyncpg.Connection | None = None
        self._listener: asyncpg.Connection | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._size = 0
        # Whose snapshot rows this store writes (the service's `[instance] name`): each
        # instance keeps its own, and starts from another's only when it has none.
        self.snapshot_owner = snapshot_owner

    def __repr__(self) -> str:
        return f"PostgresEventStore({self.location!r})"

    # ---- lifecycle -----------------------------------------------------------

    @classmethod
    async def open(cls, url: str, **options: Any) -> PostgresEventStore:
        return await cls(url, **options)._opened()

    async def _open(self) -> None:
        settings = {"default_transaction_read_only": "on"} if self.readonly else {}
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                server_settings=settings,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
            )
            if self.readonly:
                await self._check_schema()
            else:
                self._writer_conn = await asyncpg.connect(
                    self._url, command_timeout=COMMAND_TIMEOUT_SECONDS
                )
                await self._migrate(self._writer_conn)
            row = await self._pool.fetchrow("SELECT position, hash FROM log_head WHERE id = 1")
            self._size = await self._pool.fetchval("SELECT pg_database_size(current_database())")
            await self._listen()
        except _CONNECTION_ERRORS as exc:
            raise StoreError(
                f"cannot open the event log at {self.location}: {self._reason(exc)}"
            ) from None
        except ValueError:
            # asyncpg's URL parser quotes the piece it could not read, password and all.
            raise StoreError(
                f"cannot open the event log at {self.location}: not a valid PostgreSQL URL"
                " (percent-encode any @ : / ? # in the user name or password)"
            ) from None
        assert row is not None
        self._head, self._last_hash = row["position"], row["hash"]
        self._poll_task = asyncio.create_task(self._poll_loop(), name="event-log-poll")
        if not self.readonly:
            self._writer_task = asyncio.create_task(self._writer_loop(), name="event-writer")

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        """Apply pending migrations in one transaction (PostgreSQL's DDL is transactional),
        under an advisory lock so concurrent start-ups migrate once."""
        known = load_migrations(postgres_migrations_dir())
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            check_not_newer(self.location, current, known)
            for migration in known[current:]:
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise SchemaError(
                        f"migration {migration.name} failed on {self.location}: {exc}"
                    ) from None
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    time.time(),
                )

    async def _check_schema(self) -> None:
        assert self._pool is not None
        known = load_migrations(postgres_migrations_dir())
        version = 0
        if await self._pool.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            version = await self._pool.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
            )
        check_not_newer(self.location, version, known)
        if version < known[-1].version:
            raise SchemaError(
                f"{self.location} has schema version {version}; start the service once "
                f"to migrate it to {known[-1].version}"
            )

    async def _listen(self) -> None:
        self._listener = await asyncpg.connect(self._url)
        await self._listener.add_listener(CHANNEL, self._on_notification)

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        position, _, hash_ = str(payload).partition(" ")
        with contextlib.suppress(ValueError):
            self._observe(int(position), hash_)

    def _observe(self, position: int, hash_: str) -> None:
        """Another process (or this one) committed up to `position`."""
        if self._advance(position, hash_):
            self._wake_subscribers()

    async def _poll_loop(self) -> None:
        """The fallback for lost notifications: read the head now and then, and bring
        a dropped listener connection back."""
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                assert self._pool is not None
                row = await self._pool.fetchrow("SELECT position, hash FROM log_head WHERE id = 1")
            except _CONNECTION_ERRORS as exc:
                # Only the type: the text could quote the connection string.
                log.warning("event log poll of %s failed: %s", self.location, type(exc).__name__)
                continue
            if row is not None:
                self._observe(row["position"], row["hash"])

    async def _release(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        for conn in (self._listener, self._writer_conn):
            if conn is not None:
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    await conn.close(timeout=5)
        self._listener = self._writer_conn = None
        if self._pool is not None:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await self._pool.close()
            self._pool = None

    @property
    def location(self) -> str:
        """The URL with its password masked: what logs and responses may show."""
        return mask_url(self._url)

    def size_bytes(self) -> int:
        """The database's size when the store opened or last counted."""
        return self._size

    def _reason(self, error: BaseException) -> str:
        """A driver error, fit to show: the password and secret parameters scrubbed."""
        text = f"{type(error).__name__}: {error}"
        for secret in url_secrets(self._url):
            text = text.replace(secret, "***").replace(unquote(secret), "***")
        return text.replace(self._url, self.location)

    # ---- appending -----------------------------------------------------------

    async def _after_write_failure(self) -> None:
        await self._reconnect_writer()

    async def _reconnect_writer(self) -> None:
        if self._writer_conn is not None and not self._writer_conn.is_closed():
            return
        try:
            self._writer_conn = await asyncpg.connect(
                self._url, command_timeout=COMMAND_TIMEOUT_SECONDS
            )
        except _CONNECTION_ERRORS as exc:
            log.warning("event log writer cannot reconnect: %s", type(exc).__name__)

    async def _commit(self, batch: list[Append]) -> None:
        """Under the head lock, check each append on its own, then commit the accepted
        ones together; callers hear their positions only after the commit."""
        conn = self._writer_conn
        if conn is None or conn.is_closed():
            raise StoreWriteError("no connection to the database")
        plan: BatchPlan | None = None
        try:
            async with conn.transaction():
                head = await conn.fetchrow(_LOCK_HEAD)
                assert head is not None
                position, last_hash, last_recorded_at = head
                existing: dict[str, int] = {
                    row[0]: row[1]
                    for row in await conn.fetch(
                        "SELECT event_id, position FROM events WHERE event_id = ANY($1::text[])",
                        [i for r in batch for i in r.event_ids],
                    )
                }
                versions: dict[str, int] = {
                    row[0]: row[1]
                    for row in await conn.fetch(
                        "SELECT s, COALESCE((SELECT version FROM events WHERE stream = s"
                        " ORDER BY version DESC LIMIT 1), 0) FROM unnest($1::text[]) AS s",
                        list({r.stream for r in batch}),
                    )
                }
                recorded_at = max(self._clock(), last_recorded_at)
                plan = plan_batch(batch, existing, versions, position, last_hash, recorded_at)
                if plan.rows:
                    await conn.copy_records_to_table(
                        "events", records=plan.rows, columns=_COPY_COLUMNS
                    )
                    await conn.execute(_SET_HEAD, plan.head, plan.last_hash, recorded_at)
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", CHANNEL, f"{plan.head} {plan.last_hash}"
                    )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
            if plan is None or len(plan.accepted) == 1:
                raise
            await self._commit_each(plan)
            return
        self._committed(plan)

    async def append_stored(self, rows: Sequence[StoredRow]) -> None:
        """Append rows copied from another log exactly as stored (positions, ids,
        hashes): each must continue the chain at the head, or nothing is written."""
        if self._closing or self._pool is None or self.readonly:
            raise StoreClosedError(f"the event store at {self.location} is not open for writing")
        if not rows:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            head = await conn.fetchrow(_LOCK_HEAD)
            assert head is not None
            position, previous_hash, _ = head
            records = []
            for row in rows:
                if row.position != position + 1 or row.expected_hash(previous_hash) != row.hash:
                    raise StoreError(
                        f"position {row.position} does not continue the chain of"
                        f" {self.location} at position {position}"
                    )
                records.append((*msgspec.structs.astuple(row), event_label(row.decode().event)))
                position, previous_hash = row.position, row.hash
            await conn.copy_records_to_table("events", records=records, columns=_COPY_COLUMNS)
            await conn.execute(_SET_HEAD, position, previous_hash, rows[-1].recorded_at)
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{position} {previous_hash}")
        self._observe(position, previous_hash)

    # ---- reading -------------------------------------------------------------

    def _readers(self) -> _Reads:
        if self._pool is None:
            raise StoreClosedError(f"the event store at {self.location} is closed")
        return _Reads(self._pool, self)

    async def _fetch_rows(self, sql: str, params: Sequence[Any]) -> list[asyncpg.Record]:
        return await self._readers().fetch(sql, *params)

    async def _recount(self) -> None:
        self._size = await self._readers().fetchval("SELECT pg_database_size(current_database())")

    async def save_snapshots(self, states: dict[str, tuple[int, bytes]], position: int) -> None:
        """Store each read model's (version, state) as covering `position`, all in one
        transaction."""
        if self._closing or self.readonly:
            raise StoreClosedError(f"the event store at {self.location} is not open for writing")
        owner = self.snapshot_owner
        rows = [(owner, *row) for row in self._snapshot_rows(states, position)]
        try:
            async with self._readers().pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    "INSERT INTO snapshots"
                    " (instance, name, version, position, state, sha256, taken_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (instance, name) DO UPDATE SET"
                    " version = EXCLUDED.version, position = EXCLUDED.position,"
                    " state = EXCLUDED.state, sha256 = EXCLUDED.sha256,"
                    " taken_at = EXCLUDED.taken_at",
                    rows,
                )
        except _CONNECTION_ERRORS as exc:
            raise StoreWriteError(
                f"snapshot to {self.location} failed: {self._reason(exc)}"
            ) from None

    async def load_snapshots(self) -> dict[str, Snapshot]:
        """This instance's snapshot rows (`snapshot_owner`); with none, those of the
        instance whose snapshot covers the most of the log (any instance's fold of the
        same log is the same state; its settings are checked when it is restored)."""
        rows = await self._fetch_rows(
            "SELECT name, version, position, state, sha256, taken_at FROM snapshots"
            " WHERE instance = (SELECT instance FROM snapshots"
            " ORDER BY instance = $1 DESC, position DESC, taken_at DESC LIMIT 1)",
            (self.snapshot_owner,),
        )
        return {row[0]: Snapshot(*row) for row in rows}

    @contextlib.asynccontextmanager
    async def archiving(self) -> AsyncIterator[bool]:
        """The archive lock, on a connection of its own for the block: a session lock
        (no transaction held open while segments are written), released when the
        connection closes, so an instance killed while archiving leaves it free."""
        if self._closing or self.readonly:
            raise StoreClosedError(f"the event store at {self.location} is not open for writing")
        try:
            conn = await asyncpg.connect(self._url, command_timeout=COMMAND_TIMEOUT_SECONDS)
        except _CONNECTION_ERRORS as exc:
            raise StoreWriteError(
                f"cannot take the archive lock on {self.location}: {self._reason(exc)}"
            ) from None
        try:
            try:
                held = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *ARCHIVE_LOCK)
            except _CONNECTION_ERRORS as exc:
                raise StoreWriteError(
                    f"the archive lock on {self.location} failed: {self._reason(exc)}"
                ) from None
            yield bool(held)
        finally:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await conn.close(timeout=5)

    async def delete_positions(self, positions: Sequence[int]) -> None:
        """Remove rows written to the archive (retention). The head stays in `log_head`."""
        if self._closing or self.readonly:
            raise StoreClosedError(f"the event store at {self.location} is not open for writing")
        try:
            await self._readers().pool.execute(
                "DELETE FROM events WHERE position = ANY($1::bigint[])", list(positions)
            )
        except _CONNECTION_ERRORS as exc:
            raise StoreWriteError(
                f"deleting archived rows from {self.location} failed: {self._reason(exc)}"
            ) from None


class _Reads:
    """The read pool's queries, a database failure turned into a `StoreError`: the service
    answers 503 with it, as it does when a SQLite log cannot be read."""

    def __init__(self, pool: asyncpg.Pool, store: PostgresEventStore) -> None:
        self.pool = pool
        self._store = store

    def _failed(self, exc: BaseException) -> StoreError:
        return StoreError(f"read from {self._store.location} failed: {self._store._reason(exc)}")

    async def fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        try:
            return list(await self.pool.fetch(sql, *params))
        except _CONNECTION_ERRORS as exc:
            raise self._failed(exc) from None

    async def fetchval(self, sql: str, *params: Any) -> Any:
        try:
            return await self.pool.fetchval(sql, *params)
        except _CONNECTION_ERRORS as exc:
            raise self._failed(exc) from None
