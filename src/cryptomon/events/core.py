"""What both event-log backends share, whatever database holds the log.

- Group commit: `plan_batch` checks a batch of appends and lays out their rows, so the
  rules (expected versions, retried ids, the hash chain) are the same on every backend.
- The queued front (`QueuedLog`): appends wait in a queue for the writer task's next
  group commit and return once it is committed; recent commits stay in a ring, so a
  subscriber that keeps up never reads the database; subscriptions follow the head.
- Reads: every read path is written here once, paged by position, over two hooks a
  backend supplies: `_fetch_rows` (run one query) and `Queries` (the shared SQL in its
  database's spelling).

A backend (`sqlite`, `postgres`) supplies the database: opening it, writing a
planned batch, and those hooks.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from cryptomon.events.chain import GENESIS_HASH, chain_hash
from cryptomon.events.log import (
    NO_METADATA,
    ConcurrencyError,
    DuplicateEventIdError,
    Snapshot,
    StoreClosedError,
    StoredRow,
    StoreError,
    StoreWriteError,
    decode_row,
)
from cryptomon.events.types import (
    SCHEMA_VERSIONS,
    Event,
    EventMetadata,
    RecordedEvent,
    decode_events,
    encode_event,
    event_label,
)

# The stored columns in `StoredRow`'s order (the events table adds `label`).
COLUMNS = (
    "position, event_id, stream, version, type, schema_version, recorded_at,"
    " payload, correlation_id, causation_id, actor, hash"
)
_LAST_POSITION = 2**63 - 1
T = TypeVar("T")


@dataclass(slots=True)
class Append:
    """One caller's append, waiting in a store's queue for the next group commit."""

    stream: str
    events: Sequence[Event]
    event_ids: Sequence[str]
    expected_version: int | None
    metadata: EventMetadata
    future: asyncio.Future[list[int]]
    positions: list[int] = field(default_factory=list)
    records: list[RecordedEvent] = field(default_factory=list)

    # A caller may stop waiting (cancelled, say at shutdown) while its append is queued or
    # being written: answering it then would raise, and fail the rest of the batch.
    def resolve(self, positions: list[int]) -> None:
        if not self.future.done():
            self.future.set_result(positions)

    def fail(self, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(slots=True)
class BatchPlan:
    """What one group commit writes, and what it answers once committed."""

    rows: list[tuple[Any, ...]]  # in the column order of the events table, label last
    accepted: list[Append]  # their `positions` and `records` are filled in
    echoes: list[tuple[Append, list[int]]]  # retries racing their original in this batch
    versions: dict[str, int]  # each stream's version after the batch
    head: int
    last_hash: str


def plan_batch(
    batch: list[Append],
    existing: dict[str, int],
    versions: dict[str, int],
    head: int,
    last_hash: str,
    recorded_at: float,
) -> BatchPlan:
    """Check each append on its own against the log (`existing`: positions of the batch's
    event ids already stored; `versions`: each stream's current version) and lay out the
    accepted ones after `head`, chained from `last_hash`. Appends decided without writing
    are answered here: ids already stored get their positions (an idempotent retry), ids
    reused with other events or a wrong expected version get their error. Both stores plan
    with this, so the rules are the same whatever holds the log."""
    plan = BatchPlan([], [], [], dict(versions), head, last_hash)
    batch_ids: dict[str, int] = {}
    for request in batch:
        stored = [existing.get(i) for i in request.event_ids]
        if all(p is not None for p in stored):
            request.resolve([p for p in stored if p is not None])
            continue
        if all(i in batch_ids for i in request.event_ids):
            plan.echoes.append((request, [batch_ids[i] for i in request.event_ids]))
            continue
        if any(p is not None for p in stored) or any(i in batch_ids for i in request.event_ids):
            request.fail(
                DuplicateEventIdError(
                    f"append to {request.stream!r} reuses event ids already stored"
                    " or appended with other events"
                )
            )
            continue
        version = plan.versions[request.stream]
        if request.expected_version is not None and request.expected_version != version:
            request.fail(ConcurrencyError(request.stream, request.expected_version, version))
            continue
        meta = request.metadata
        for event, event_id in zip(request.events, request.event_ids, strict=True):
            plan.head += 1
            version += 1
            event_type = type(event).__name__
            schema_version = SCHEMA_VERSIONS[event_type]
            payload = encode_event(event)
            hash_ = chain_hash(
                plan.last_hash, event_id, request.stream, version, event_type, schema_version,
                recorded_at, meta.correlation_id, meta.causation_id, meta.actor, payload,
            )  # fmt: skip
            plan.rows.append(
                (plan.head, event_id, request.stream, version, event_type, schema_version,
                 recorded_at, payload, meta.correlation_id, meta.causation_id, meta.actor,
                 hash_, event_label(event))
            )  # fmt: skip
            request.positions.append(plan.head)
            request.records.append(
                RecordedEvent(
                    plan.head, event_id, request.stream, version, recorded_at, event, meta, hash_
                )
            )
            batch_ids[event_id] = plan.head
            plan.last_hash = hash_
        plan.versions[request.stream] = version
        plan.accepted.append(request)
    return plan


@dataclass(slots=True)
class BetweenCommits:
    """Work the writer task runs between two group commits, never inside one (SQLite's
    `exclusive`: maintenance on the writer connection)."""

    run: Callable[[], Awaitable[None]]


class Queries:
    """The SQL of the shared reads in one database's spelling. Each is written once, with
    SQLite's `?` parameters; `spell` turns it into the backend's (the identity for
    SQLite). `high_water` is the backend's own: the last position ever handed out."""

    def __init__(self, spell: Callable[[str], str], *, high_water: str) -> None:
        self._spell = spell
        self.high_water = high_water
        self.read_all = spell(
            f"SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        )
        self.page = spell(
            f"SELECT {COLUMNS} FROM events WHERE position > ? AND position <= ?"
            " ORDER BY position LIMIT ?"
        )
        # Only the columns a fold reads (see `QueuedLog.replay_pages`).
        self.replay_page = spell(
            "SELECT position, recorded_at, type, schema_version, payload FROM events"
            " WHERE position > ? AND position <= ? ORDER BY position LIMIT ?"
        )
        self.filtered = spell(
            f"SELECT {COLUMNS} FROM events WHERE position > ? AND (? IS NULL OR type = ?)"
            " ORDER BY position LIMIT ?"
        )
        self.filtered_in_stream = spell(
            f"SELECT {COLUMNS} FROM events WHERE stream = ? AND position > ?"
            " AND (? IS NULL OR type = ?) ORDER BY version LIMIT ?"
        )
        self.stream = spell(
            f"SELECT {COLUMNS} FROM events WHERE stream = ? AND version > ?"
            " ORDER BY version LIMIT ?"
        )
        self.by_label = spell(
            f"SELECT {COLUMNS} FROM events WHERE label = ? AND recorded_at >= ?"
            " AND recorded_at < ? AND (? IS NULL OR stream = ?)"
            " ORDER BY recorded_at DESC, position DESC LIMIT ?"
        )
        self.rows = spell(
            f"SELECT {COLUMNS} FROM events WHERE position > ? AND position <= ?"
            " AND recorded_at >= ? AND recorded_at < ? AND (? IS NULL OR type = ?)"
            " ORDER BY position LIMIT ?"
        )
        self.count_by_type = spell("SELECT type, COUNT(*) FROM events GROUP BY type")
        self.count_snapshots = spell("SELECT COUNT(*) FROM snapshots")
        self.snapshots = spell(
            "SELECT name, version, position, state, sha256, taken_at FROM snapshots"
        )
        self.stream_version = spell("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?")
        # One query per (number of types, order): callers ask for a few fixed sets.
        self._by_type: dict[tuple[int, bool], str] = {}

    def by_type(self, count: int, newest_first: bool) -> str:
        sql = self._by_type.get((count, newest_first))
        if sql is None:
            marks = ",".join("?" * count)
            order = "DESC" if newest_first else "ASC"
            sql = self._by_type[(count, newest_first)] = self._spell(
                f"SELECT {COLUMNS} FROM events WHERE type IN ({marks})"
                " AND recorded_at >= ? AND recorded_at < ? AND (? IS NULL OR stream = ?)"
                f" ORDER BY recorded_at {order}, position {order} LIMIT ?"
            )
        return sql


class QueuedLog:
    """What every event log does in this process, whatever database holds it: the
    queued writer, the ring, subscriptions and the reads. A backend supplies the hooks
    below (`location`, `_open`, `_release`, `_commit`, `_reason`, `_fetch_rows`,
    `queries`) and its own writes (snapshots, and anything only it offers)."""

    queries: Queries
    # The capabilities a caller asks for (see `EventLog`): none, unless a backend has them.
    path: Path | None = None
    archive: Path | None = None
    single_writer = False
    supports_exclusive = False

    def __init__(
        self, *, readonly: bool, clock: Callable[[], float], max_batch: int, ring_capacity: int
    ) -> None:
        self.readonly = readonly
        self._clock = clock
        self._max_batch = max_batch
        self._ring_capacity = ring_capacity
        self._ring: deque[list[RecordedEvent]] = deque()
        self._ring_size = 0
        self._commit_signal = asyncio.Event()
        self._queue: asyncio.Queue[Append | BetweenCommits | None] = asyncio.Queue()
        self._head = 0
        self._last_hash = GENESIS_HASH
        self._closing = False
        self._closed = False
        self._writer_task: asyncio.Task[None] | None = None
        self.failed_appends = 0
        # The outcome of the latest write: health checks report a failing disk.
        self.last_write_failed = False
        self.last_write_error: str | None = None
        self._counts: tuple[float, dict[str, int], dict[str, int]] | None = None

    # ---- what a backend supplies ---------------------------------------------

    @property
    def location(self) -> str:
        """Where the log lives, fit to show in responses and log lines."""
        raise NotImplementedError

    async def _open(self) -> None:
        """Connect, migrate (or check the schema), read the head, start the writer."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Close whatever `_open` opened, however far it got."""
        raise NotImplementedError

    async def _commit(self, batch: list[Append]) -> None:
        """Plan `batch` against the database, write it in one transaction, then answer
        it (`_committed`)."""
        raise NotImplementedError

    def _reason(self, exc: BaseException) -> str:
        """A database error, fit to show: what it says, never a secret."""
        raise NotImplementedError

    async def _fetch_rows(self, sql: str, params: Sequence[Any]) -> Sequence[Any]:
        """All rows of one query (`sql` from `queries`), a failure as a `StoreError`."""
        raise NotImplementedError

    async def _after_write_failure(self) -> None:
        """Called when a group commit failed (say, to reconnect)."""

    async def _recount(self) -> None:
        """Called when `counts` counts again (say, to measure the database's size)."""

    async def exclusive(self, work: Callable[[Any], Awaitable[T]]) -> T:
        raise StoreError(f"the event log at {self.location} runs no work on its connection")

    # ---- lifecycle -----------------------------------------------------------

    async def _opened(self) -> Self:
        try:
            await self._open()
        except BaseException:
            await self._release()
            raise
        return self

    async def close(self) -> None:
        """Stop taking appends, commit everything already queued, then close."""
        if self._closed:
            return
        self._closing = True
        if self._writer_task is not None:
            self._queue.put_nowait(None)
            await self._writer_task
        self._closed = True
        self._wake_subscribers()
        await self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def head(self) -> int:
        """The last committed position this store knows of (0 for an empty log): its own
        commits, and on a log several processes write, theirs as they are heard of."""
        return self._head

    @property
    def last_hash(self) -> str:
        return self._last_hash

    # ---- appending -----------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: int | None = None,
        event_ids: Sequence[str] | None = None,
        metadata: EventMetadata | None = None,
    ) -> list[int]:
        """Append events to a stream; return their positions once committed.

        `expected_version` (0 for a new stream) makes the append fail with
        `ConcurrencyError` unless the stream is at that version. Appending
        again with the same `event_ids` writes nothing and returns the
        positions they were first stored at.
        """
        if self._closing or self._writer_task is None:
            raise StoreClosedError(f"the event store at {self.location} is closed")
        if not events:
            return []
        if event_ids is None:
            event_ids = [str(uuid.uuid4()) for _ in events]
        elif len(event_ids) != len(events) or len(set(event_ids)) != len(event_ids):
            raise ValueError("event_ids must give one distinct id per event")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(
            Append(stream, events, event_ids, expected_version, metadata or NO_METADATA, future)
        )
        return await future

    async def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            if isinstance(first, BetweenCommits):
                await first.run()
                continue
            batch = [first]
            between: BetweenCommits | None = None
            size = len(first.events)
            while size < self._max_batch and not self._queue.empty():
                request = self._queue.get_nowait()
                if request is None:
                    stopping = True
                    break
                if isinstance(request, BetweenCommits):
                    between = request  # runs after this batch commits
                    break
                batch.append(request)
                size += len(request.events)
            await self._commit_batch(batch)
            if between is not None:
                await between.run()

    def _write_error(self, exc: BaseException) -> StoreWriteError:
        return StoreWriteError(f"append to {self.location} failed: {self._reason(exc)}")

    async def _commit_batch(self, batch: list[Append]) -> None:
        try:
            await self._commit(batch)
            self.last_write_failed = False
        except Exception as exc:  # keep the writer alive for later appends
            error = self._write_error(exc)
            self.last_write_failed = True
            self.last_write_error = str(error)
            for request in batch:
                request.positions.clear()
                request.records.clear()
                if not request.future.done():
                    self.failed_appends += len(request.events)
                    request.future.set_exception(error)
            await self._after_write_failure()

    async def _commit_each(self, plan: BatchPlan) -> None:
        """The database refused a batch for one append's sake (a constraint nobody could
        see coming, text it cannot hold): never let one call fail the others, commit each
        on its own (an echo then finds its ids)."""
        for request in [*plan.accepted, *(echo for echo, _ in plan.echoes)]:
            request.positions.clear()
            request.records.clear()
            try:
                await self._commit([request])
            except Exception as exc:
                if not request.future.done():
                    self.failed_appends += len(request.events)
                    request.fail(self._write_error(exc))

    def _committed(self, plan: BatchPlan) -> None:
        """`plan` is committed: move the head, keep its events for subscribers, answer
        its callers, then wake the subscribers."""
        moved = False
        if plan.accepted:
            self._remember([record for request in plan.accepted for record in request.records])
            moved = self._advance(plan.head, plan.last_hash)
        for request in plan.accepted:
            request.resolve(request.positions)
        for request, positions in plan.echoes:
            request.resolve(positions)
        if moved:
            self._wake_subscribers()

    def _advance(self, position: int, hash_: str) -> bool:
        """The log is committed up to `position` (by this process or another)."""
        if position <= self._head:
            return False
        self._head, self._last_hash = position, hash_
        return True

    def _remember(self, committed: list[RecordedEvent]) -> None:
        self._ring.append(committed)
        self._ring_size += len(committed)
        while self._ring_size > self._ring_capacity and len(self._ring) > 1:
            self._ring_size -= len(self._ring.popleft())

    def _wake_subscribers(self) -> None:
        signal, self._commit_signal = self._commit_signal, asyncio.Event()
        signal.set()

    # ---- subscriptions -------------------------------------------------------

    def _from_ring(self, after: int) -> list[RecordedEvent] | None:
        for committed in reversed(self._ring):
            first = committed[0].position
            if first <= after + 1 <= committed[-1].position:
                return committed[after + 1 - first :]
            if committed[-1].position <= after:
                return None
        return None

    async def subscribe(
        self, after: int = 0, *, page_size: int = 5000
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after `after`, in order: stored ones first, then live
        ones as they commit (with several processes on one PostgreSQL log, theirs
        too), with no gap and no duplicate. Ends when the store closes."""
        position = after
        while True:
            signal = self._commit_signal
            if position < self._head:
                events = self._from_ring(position)
                if events is None:
                    events = await self.read_all(after=position, limit=page_size)
                if not events:
                    raise StoreError(f"position {position + 1} is committed but unreadable")
                for event in events:
                    yield event
                position = events[-1].position
            elif self._closed:
                return
            else:
                await signal.wait()

    # ---- reading -------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[RecordedEvent]:
        return [decode_row(row) for row in await self._fetch_rows(sql, params)]

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events after position `after`, in order."""
        return await self._fetch(self.queries.read_all, (after, limit))

    async def pages(
        self, *, after: int = 0, to_position: int | None = None, page_size: int = 5000
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Events after `after` (up to `to_position`), a page at a time. Pages are
        read in turn, not ahead: a read-ahead thread only fights the folding
        caller for the GIL (measured: 17% slower)."""
        end = to_position if to_position is not None else _LAST_POSITION
        sql = self.queries.page
        last = after
        while rows := await self._fetch_rows(sql, (last, end, page_size)):
            last = rows[-1][0]
            yield [decode_row(row) for row in rows]

    async def replay_pages(
        self, *, after: int = 0, to_position: int | None = None, page_size: int = 5000
    ) -> AsyncIterator[tuple[Sequence[int], Sequence[float], list[Event]]]:
        """`pages` for a replay, as columns: the positions, recorded_at times and events of a
        page, the only parts of an event a fold reads. Leaving out ids, stream, metadata and
        hash makes a page a third cheaper to fetch (measured), its payloads are decoded
        together (`decode_events`), and columns spare a tuple per event."""
        end = to_position if to_position is not None else _LAST_POSITION
        sql = self.queries.replay_page
        last = after
        while rows := await self._fetch_rows(sql, (last, end, page_size)):
            last = rows[-1][0]
            positions, times, types, versions, payloads = zip(*rows, strict=True)
            events = decode_events(positions, types, versions, payloads)
            # A generator keeps its locals over the yield: let the rows and payloads go first.
            del rows, types, versions, payloads
            yield positions, times, events

    async def read_filtered(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        event_type: str | None = None,
        stream: str | None = None,
    ) -> list[RecordedEvent]:
        """A page of the log after `after`, optionally of one type or stream."""
        if stream is not None:
            return await self._fetch(
                self.queries.filtered_in_stream, (stream, after, event_type, event_type, limit)
            )
        return await self._fetch(self.queries.filtered, (after, event_type, event_type, limit))

    async def counts(self, max_age: float = 30.0) -> tuple[dict[str, int], dict[str, int]]:
        """(rows per table, events per type), counted at most every `max_age`
        seconds: counting scans an index, too much to do on every request."""
        now = time.monotonic()
        if self._counts is None or now - self._counts[0] > max_age:
            by_type = {
                row[0]: row[1] for row in await self._fetch_rows(self.queries.count_by_type, ())
            }
            snapshots = await self._fetch_rows(self.queries.count_snapshots, ())
            await self._recount()
            tables = {"events": sum(by_type.values()), "snapshots": snapshots[0][0]}
            self._counts = (now, tables, by_type)
        return self._counts[1], self._counts[2]

    async def read_stream(
        self, stream: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        return await self._fetch(self.queries.stream, (stream, after_version, limit))

    async def read_by_type(
        self,
        types: Sequence[str],
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        newest_first: bool = True,
        stream: str | None = None,
    ) -> list[RecordedEvent]:
        """Events of the given types (in `stream`, if given) recorded in
        [since, until), through the (type, recorded_at) index."""
        if not types:
            return []  # `type IN ()` is SQLite's alone
        return await self._fetch(
            self.queries.by_type(len(types), newest_first),
            (*types, since if since is not None else float("-inf"),
             until if until is not None else float("inf"), stream, stream, limit),
        )  # fmt: skip

    async def read_by_label(
        self,
        labels: Sequence[str],
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        stream: str | None = None,
    ) -> list[RecordedEvent]:
        """Newest first, events carrying any of `labels` (see `event_label`), in
        `stream` if given, recorded in [since, until): one index walk per label, merged."""
        low = since if since is not None else float("-inf")
        high = until if until is not None else float("inf")
        per_label = [
            await self._fetch(self.queries.by_label, (label, low, high, stream, stream, limit))
            for label in labels
        ]
        merged = heapq.merge(*per_label, key=lambda e: (e.recorded_at, e.position), reverse=True)
        return list(merged)[:limit]

    def _snapshot_rows(
        self, states: dict[str, tuple[int, bytes]], position: int
    ) -> list[tuple[str, int, int, bytes, str, float]]:
        """`save_snapshots`' rows, in the snapshots table's column order."""
        taken_at = self._clock()
        return [
            (name, version, position, state, hashlib.sha256(state).hexdigest(), taken_at)
            for name, (version, state) in states.items()
        ]

    async def load_snapshots(self) -> dict[str, Snapshot]:
        return {
            row[0]: Snapshot(*row) for row in await self._fetch_rows(self.queries.snapshots, ())
        }

    async def iter_rows(
        self,
        *,
        after: int = 0,
        to_position: int | None = None,
        since: float | None = None,
        until: float | None = None,
        event_type: str | None = None,
        page_size: int = 5000,
    ) -> AsyncIterator[StoredRow]:
        """Stored rows in position order, undecoded, one page in memory at a time."""
        last = after
        end = to_position if to_position is not None else _LAST_POSITION
        low = since if since is not None else float("-inf")
        high = until if until is not None else float("inf")
        sql = self.queries.rows
        while rows := await self._fetch_rows(
            sql, (last, end, low, high, event_type, event_type, page_size)
        ):
            for row in rows:
                yield StoredRow(*row)
            last = rows[-1][0]

    async def sequence_high_water(self) -> int:
        """The last position ever handed out, deleted rows included."""
        rows = await self._fetch_rows(self.queries.high_water, ())
        return int(rows[0][0]) if rows else 0

    async def stream_version(self, stream: str) -> int:
        rows = await self._fetch_rows(self.queries.stream_version, (stream,))
        return int(rows[0][0]) if rows else 0
