"""Retention: old probe events move out of the live database into compressed
JSON Lines segments in the log's archive directory, and the log reads on across both.

Each archived line holds every stored field of its event, so the hash chain
stays verifiable across archive and database. Segments are written whole
(temporary file, fsync, rename) before their rows are deleted; a crash between
the two leaves a row in both places, which readers take once.

The directory is `EventLog.archive`: `storage.archive_dir`, or beside a SQLite file.
A log without one (PostgreSQL given none) has no segments: it is the database alone.
One process archives at a time (`EventLog.archiving`); another may read meanwhile, so a
reader that finds positions missing from the database lists the segments again before
it calls them missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import re
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import msgspec

from cryptomon.events.log import EventLog, StoredRow

_SEGMENT = re.compile(r"^segment-(\d{12})-(\d{12})\.jsonl\.gz$")
_READ_BATCH = 5000


class ArchivedEvent(msgspec.Struct, frozen=True):
    """One event as exported or archived: every stored field, payload as JSON."""

    position: int
    event_id: str
    stream: str
    version: int
    type: str
    schema_version: int
    recorded_at: float
    correlation_id: str | None
    causation_id: str | None
    actor: str | None
    hash: str
    payload: msgspec.Raw

    @classmethod
    def of(cls, row: StoredRow) -> ArchivedEvent:
        return cls(
            row.position, row.event_id, row.stream, row.version, row.type, row.schema_version,
            row.recorded_at, row.correlation_id, row.causation_id, row.actor, row.hash,
            msgspec.Raw(row.payload),
        )  # fmt: skip

    def row(self) -> StoredRow:
        return StoredRow(
            self.position, self.event_id, self.stream, self.version, self.type,
            self.schema_version, self.recorded_at, bytes(self.payload), self.correlation_id,
            self.causation_id, self.actor, self.hash,
        )  # fmt: skip


class ArchiveError(RuntimeError):
    pass


class ArchiveBusyError(ArchiveError):
    """Another instance of the log is archiving."""


def archive_dir(database: Path) -> Path:
    """Where a SQLite file's segments go unless `storage.archive_dir` says otherwise."""
    return database.with_name(database.name + ".archive")


def log_segments(store: EventLog) -> list[tuple[int, int, Path]]:
    """The archive segments of `store`'s log (none when it has no archive directory)."""
    return segments_in(store.archive) if store.archive is not None else []


def segments(database: Path) -> list[tuple[int, int, Path]]:
    """The segments beside a SQLite file, in their default directory."""
    return segments_in(archive_dir(database))


def segments_in(directory: Path) -> list[tuple[int, int, Path]]:
    """(first position, last position, file) of each segment, in order."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _SEGMENT.match(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found)


def _read_segment(path: Path) -> Iterator[list[StoredRow]]:
    decoder = msgspec.json.Decoder(ArchivedEvent)
    batch: list[StoredRow] = []
    try:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    batch.append(decoder.decode(line).row())
                except msgspec.DecodeError as exc:
                    raise ArchiveError(f"{path} line {number} is unreadable: {exc}") from None
                if len(batch) == _READ_BATCH:
                    yield batch
                    batch = []
    except (OSError, EOFError) as exc:
        raise ArchiveError(f"{path} is unreadable: {exc}") from None
    if batch:
        yield batch


async def iter_archived_rows(directory: Path, after: int = 0) -> AsyncGenerator[StoredRow, None]:
    """Archived rows after `after` in position order, decompressed off the loop."""
    for _first, last, path in segments_in(directory):
        if last <= after:
            continue
        reader = _read_segment(path)
        while batch := await asyncio.to_thread(next, reader, None):
            for row in batch:
                if row.position > after:
                    yield row


async def _no_rows() -> AsyncGenerator[StoredRow, None]:
    return
    yield


async def iter_log_rows(
    store: EventLog,
    *,
    after: int = 0,
    to_position: int | None = None,
    since: float | None = None,
    until: float | None = None,
) -> AsyncGenerator[StoredRow, None]:
    """The whole log, archive and database merged in position order."""
    end = to_position if to_position is not None else 2**63 - 1
    low = since if since is not None else float("-inf")
    high = until if until is not None else float("inf")
    directory = store.archive

    def archive_after(position: int) -> AsyncGenerator[StoredRow, None]:
        return iter_archived_rows(directory, position) if directory is not None else _no_rows()

    archived = archive_after(after)
    live = aiter(store.iter_rows(after=after, to_position=to_position, since=since, until=until))
    next_archived = await anext(archived, None)
    next_live = await anext(live, None)
    # Positions are gap-free, so a whole-log read that finds some missing from the
    # database may have met another process archiving them after it listed the segments
    # (they are in a segment before they leave the database): list again, once a gap.
    whole = since is None and until is None
    last, relisted_after = after, -1
    while next_archived is not None or next_live is not None:
        if (
            whole
            and directory is not None
            and next_live is not None
            and next_live.position > last + 1
            and (next_archived is None or next_archived.position > last + 1)
            and relisted_after != last
        ):
            relisted_after = last
            await archived.aclose()
            archived = archive_after(last)
            next_archived = await anext(archived, None)
        if next_live is None or (
            next_archived is not None and next_archived.position < next_live.position
        ):
            assert next_archived is not None
            row = next_archived
            next_archived = await anext(archived, None)
            if row.position > end:
                next_archived = None
                continue
            if not low <= row.recorded_at < high:
                continue
        else:
            row = next_live
            if next_archived is not None and next_archived.position == row.position:
                next_archived = await anext(archived, None)  # archived, not yet deleted
            next_live = await anext(live, None)
        last = row.position
        yield row


async def hash_at(store: EventLog, position: int) -> str | None:
    """The chain hash of the event at `position`, archived or not; None when the log has
    no such position."""
    async with contextlib.aclosing(
        iter_log_rows(store, after=position - 1, to_position=position)
    ) as rows:
        async for row in rows:
            return row.hash if row.position == position else None
    return None


async def archive_probe_events(
    store: EventLog, *, before: float, up_to_position: int, segment_events: int = 200_000
) -> int:
    """Move probe events recorded before `before` (and at or below
    `up_to_position`, which snapshots already cover) into new segments of at
    most `segment_events` each (memory stays bounded however far behind
    retention is); return how many moved. The log needs an archive directory;
    `ArchiveBusyError` when another instance is archiving it."""
    directory = store.archive
    if directory is None:
        raise ArchiveError(
            f"the event log at {store.location} has no archive directory: set storage.archive_dir"
        )
    async with store.archiving() as ours:
        if not ours:
            raise ArchiveBusyError(f"another instance is archiving the log at {store.location}")
        return await _archive(store, directory, before, up_to_position, segment_events)


async def _archive(
    store: EventLog, directory: Path, before: float, up_to_position: int, segment_events: int
) -> int:
    # The newest row stays: the store finds its head and last hash in the database.
    up_to_position = min(up_to_position, store.head - 1)
    moved = 0
    while True:
        known = segments_in(directory)
        after = known[-1][1] if known else 0
        rows: list[StoredRow] = []
        async for row in store.iter_rows(
            after=after, to_position=up_to_position, until=before, event_type="ProbeRecorded"
        ):
            rows.append(row)
            if len(rows) == segment_events:
                break
        if not rows:
            return moved
        target = directory / f"segment-{rows[0].position:012d}-{rows[-1].position:012d}.jsonl.gz"
        await asyncio.to_thread(_write_segment, target, rows)
        await store.delete_positions([row.position for row in rows])
        moved += len(rows)
        if len(rows) < segment_events:
            return moved


def _write_segment(target: Path, rows: list[StoredRow]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    partial = target.with_suffix(".partial")
    with open(partial, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
            for row in rows:
                packed.write(encoder.encode(ArchivedEvent.of(row)) + b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
