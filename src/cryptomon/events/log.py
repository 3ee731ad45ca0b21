"""The event log's contract, whichever database holds it: the `EventLog` interface, its
errors, the stored row and snapshot types, and opening a log from a target.

The service, the CLI and the audits use `EventLog`; the SQLite `EventStore` (the
embedded default) and `PostgresEventStore` both provide it, and the same contract
tests run against both. The backends import this module (and `core`, what they share)
and never each other; this module names a backend only inside `open_event_log`, which
opens the one a target names: a file path for SQLite, a `postgresql://` URL for
PostgreSQL.

What only some backends can do is on the interface too, as a capability a caller
asks for (`path`, `single_writer`, `supports_exclusive`) rather than a type it checks:
a log on a database server has no file to hand a second process, other instances
append to it, and it runs no work on a SQLite connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from cryptomon.events.chain import chain_hash
from cryptomon.events.types import Event, EventMetadata, RecordedEvent, decode_event

if TYPE_CHECKING:
    import aiosqlite

NO_METADATA = EventMetadata()
T = TypeVar("T")


class StoreError(RuntimeError):
    """Base class of event-store failures."""


class ConcurrencyError(StoreError):
    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, but the append expected {expected}"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class DuplicateEventIdError(StoreError):
    """Some, but not all, of an append's event ids are already stored."""


class StoreClosedError(StoreError):
    pass


class StoreWriteError(StoreError):
    """The database refused the write (read-only, disk full, locked...)."""


class StoreLockedError(StoreError):
    pass


class StoredRow(msgspec.Struct, frozen=True, gc=False):
    """An event row exactly as stored, undecoded: what audits read."""

    position: int
    event_id: str
    stream: str
    version: int
    type: str
    schema_version: int
    recorded_at: float
    payload: bytes
    correlation_id: str | None
    causation_id: str | None
    actor: str | None
    hash: str

    def decode(self) -> RecordedEvent:
        return decode_row(
            (self.position, self.event_id, self.stream, self.version, self.type,
             self.schema_version, self.recorded_at, self.payload, self.correlation_id,
             self.causation_id, self.actor, self.hash)
        )  # fmt: skip

    def expected_hash(self, previous_hash: str) -> str:
        return chain_hash(
            previous_hash,
            self.event_id,
            self.stream,
            self.version,
            self.type,
            self.schema_version,
            self.recorded_at,
            self.correlation_id,
            self.causation_id,
            self.actor,
            self.payload,
        )


def decode_row(row: Any) -> RecordedEvent:
    """A row in `StoredRow`'s column order (a database row, or a tuple), decoded."""
    (position, event_id, stream, version, event_type, schema_version, recorded_at, payload,
     correlation_id, causation_id, actor, hash_) = row  # fmt: skip
    if correlation_id is None and causation_id is None and actor is None:
        metadata = NO_METADATA
    else:
        metadata = EventMetadata(correlation_id, causation_id, actor)
    return RecordedEvent(
        position,
        event_id,
        stream,
        version,
        recorded_at,
        decode_event(position, event_type, schema_version, payload),
        metadata,
        hash_,
    )


class Snapshot(msgspec.Struct, frozen=True):
    name: str
    version: int
    position: int
    state: bytes
    sha256: str
    taken_at: float

    @property
    def intact(self) -> bool:
        return hashlib.sha256(self.state).hexdigest() == self.sha256


POSTGRES_SCHEMES = ("postgresql", "postgres")


class EventLog(Protocol):
    """Append-only, hash-chained, gap-free global order; see `EventStore` for the
    meaning of each method."""

    readonly: bool
    failed_appends: int
    last_write_failed: bool
    last_write_error: str | None

    @property
    def location(self) -> str:
        """Where the log lives, fit to show: a file path, or a URL without its password."""

    @property
    def head(self) -> int: ...

    @property
    def last_hash(self) -> str: ...

    def size_bytes(self) -> int:
        """The database's size as last seen (files on disk, or as last counted)."""

    async def close(self) -> None: ...

    async def __aenter__(self) -> EventLog: ...

    async def __aexit__(self, *_exc: object) -> None: ...

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: int | None = None,
        event_ids: Sequence[str] | None = None,
        metadata: EventMetadata | None = None,
    ) -> list[int]: ...

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]: ...

    def pages(
        self, *, after: int = 0, to_position: int | None = None, page_size: int = 5000
    ) -> AsyncIterator[list[RecordedEvent]]: ...

    def replay_pages(
        self, *, after: int = 0, to_position: int | None = None, page_size: int = 5000
    ) -> AsyncIterator[tuple[Sequence[int], Sequence[float], list[Event]]]: ...

    async def read_filtered(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        event_type: str | None = None,
        stream: str | None = None,
    ) -> list[RecordedEvent]: ...

    async def counts(self, max_age: float = 30.0) -> tuple[dict[str, int], dict[str, int]]: ...

    async def read_stream(
        self, stream: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]: ...

    async def read_by_type(
        self,
        types: Sequence[str],
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        newest_first: bool = True,
        stream: str | None = None,
    ) -> list[RecordedEvent]: ...

    async def read_by_label(
        self,
        labels: Sequence[str],
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        stream: str | None = None,
    ) -> list[RecordedEvent]: ...

    async def save_snapshots(self, states: dict[str, tuple[int, bytes]], position: int) -> None: ...

    async def load_snapshots(self) -> dict[str, Snapshot]: ...

    def iter_rows(
        self,
        *,
        after: int = 0,
        to_position: int | None = None,
        since: float | None = None,
        until: float | None = None,
        event_type: str | None = None,
        page_size: int = 5000,
    ) -> AsyncIterator[StoredRow]: ...

    async def sequence_high_water(self) -> int: ...

    async def stream_version(self, stream: str) -> int: ...

    def subscribe(
        self, after: int = 0, *, page_size: int = 5000
    ) -> AsyncIterator[RecordedEvent]: ...

    # ---- what only some backends can do: ask, never check the type ----------

    @property
    def path(self) -> Path | None:
        """The database file, when the log is one file on this machine (SQLite): another
        process may open it read-only. None for a log on a database server (PostgreSQL)."""

    @property
    def archive(self) -> Path | None:
        """The directory of the log's archive segments (retention): `storage.archive_dir`
        when given, else beside a SQLite file (`<file>.archive`); None for a server log
        given none, which then has no archive."""

    def archiving(self) -> AbstractAsyncContextManager[bool]:
        """For the block, the right to move rows into the archive: True when this process
        has it, False while another instance of the log archives (PostgreSQL's advisory
        lock; a SQLite file has one writing process, which always has it)."""

    @property
    def single_writer(self) -> bool:
        """Whether one process at a time writes the log (a SQLite file's lock): a position
        past the head that this store never saw was then deleted, not appended by another
        instance."""

    @property
    def supports_exclusive(self) -> bool:
        """Whether `exclusive` runs work on the log's own SQLite connection (where a SQLite
        log's notification outbox keeps its tables)."""

    async def exclusive(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work` on the writer's connection between two commits; a `StoreError`
        where `supports_exclusive` is False."""

    async def delete_positions(self, positions: Sequence[int]) -> None:
        """Remove rows written to the archive (retention), under `archiving`."""


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and urlsplit(target).scheme in POSTGRES_SCHEMES


# Query parameters libpq and asyncpg read a secret from.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def url_secrets(url: str) -> list[str]:
    """The secrets a PostgreSQL URL carries: its password and secret parameters."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = [parts.password or ""] + [v for k, v in query if k in SECRET_PARAMETERS]
    return [secret for secret in found if secret]


def mask_url(url: str) -> str:
    """The URL with its secrets replaced by `***`: what logs and responses may show."""
    parts = urlsplit(url)
    if "@" in url and "@" not in parts.netloc:
        # A password with an unescaped "/", "?" or "#" ends the host part early and
        # spills into the path or query: nothing after the scheme is safe to show.
        return f"{parts.scheme}://***"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}")
    if any(key in SECRET_PARAMETERS for key, _ in query):
        masked = [(key, "***" if key in SECRET_PARAMETERS else value) for key, value in query]
        parts = parts._replace(query=urlencode(masked, safe="/*"))
    return urlunsplit(parts)


async def open_event_log(
    target: str | Path,
    *,
    readonly: bool = False,
    archive: Path | None = None,
    snapshot_owner: str = "",
    **options: Any,
) -> EventLog:
    """Open the log at `target`: a `postgresql://` URL, or else a SQLite file path. Its
    archive segments are in `archive` (`storage.archive_dir`), or else beside a SQLite
    file. On PostgreSQL, snapshot rows are `snapshot_owner`'s (the instance's name); a
    SQLite log has one instance."""
    if is_postgres_url(target):
        from cryptomon.events.postgres import PostgresEventStore

        return await PostgresEventStore.open(
            str(target),
            readonly=readonly,
            archive=archive,
            snapshot_owner=snapshot_owner,
            **options,
        )
    from cryptomon.events.sqlite import EventStore

    return await EventStore.open(Path(target), readonly=readonly, archive=archive, **options)
