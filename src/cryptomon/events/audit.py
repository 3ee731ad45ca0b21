"""Audits of the stored log: walk the hash chain, keep a check of it that follows
the head (`ChainCheck`), export ranges as JSON Lines.

All read the archive and the database as one log, a page at a time, so
memory stays flat for any log size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO, Literal

import msgspec

from cryptomon.events.archive import ArchivedEvent, iter_log_rows
from cryptomon.events.chain import GENESIS_HASH
from cryptomon.events.log import EventLog

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
# What the check knows of the chain: `verifying` while start-up's check of the history
# (the events before the snapshot) runs; `intact` from position 1 up to the verified
# position; `broken` at a position; `unverified` when the history could not be read.
ChainState = Literal["verifying", "intact", "broken", "unverified"]
# After an incremental walk failed to read, the next one is tried this much later at
# the latest (or at the next commit, if sooner).
RETRY_SECONDS = 5.0


class ChainReport(msgspec.Struct, frozen=True):
    ok: bool
    count: int
    last_position: int
    last_hash: str
    broken_at: int | None = None
    reason: str | None = None


async def verify_chain(
    store: EventLog,
    progress: Progress | None = None,
    *,
    after: int = 0,
    after_hash: str = GENESIS_HASH,
    to_position: int | None = None,
    as_far_as_visible: bool = False,
) -> ChainReport:
    """Recompute every hash in order after position `after`, whose hash is `after_hash`
    (by default from the start of the log), up to `to_position` (or to the end of the
    log); report the first position that breaks. `count` is the events verified by this
    walk; `last_position` and `last_hash` are where it got to intact.

    `as_far_as_visible`: rows after the last one this reader sees are not called
    missing. A walk that follows the head needs it: a commit can advance the head before
    its rows are visible to the reading connection, and that is no deletion."""
    previous_hash = after_hash
    previous_position = after
    count = 0
    async for row in iter_log_rows(store, after=after, to_position=to_position):
        if row.position != previous_position + 1:
            return ChainReport(
                False, count, previous_position, previous_hash, previous_position + 1,
                f"positions {previous_position + 1}..{row.position - 1} are missing (deleted rows)",
            )  # fmt: skip
        try:
            expected = row.expected_hash(previous_hash)
        except (TypeError, ValueError, msgspec.EncodeError):
            expected = None  # a field of the wrong type: edited with an outside tool
        if expected != row.hash:
            return ChainReport(
                False, count, previous_position, previous_hash, row.position,
                "hash does not match: the row was edited, or rows were reordered",
            )  # fmt: skip
        previous_hash = row.hash
        previous_position = row.position
        count += 1
        if progress is not None and count % 10_000 == 0:
            progress(count)
    if as_far_as_visible:
        return ChainReport(True, count, previous_position, previous_hash)
    if to_position is not None:
        if previous_position < to_position:
            return ChainReport(
                False, count, previous_position, previous_hash, previous_position + 1,
                f"positions {previous_position + 1}..{to_position} are missing (deleted rows)",
            )  # fmt: skip
        return ChainReport(True, count, previous_position, previous_hash)
    high_water = await store.sequence_high_water()
    if high_water > previous_position:
        return ChainReport(
            False, count, previous_position, previous_hash, previous_position + 1,
            f"positions {previous_position + 1}..{high_water} are missing (deleted rows)",
        )  # fmt: skip
    return ChainReport(True, count, previous_position, previous_hash)


FullWalk = Callable[[], Awaitable[ChainReport]]


class ChainCheck:
    """The hash chain of a running service's log, verified as it grows.

    At start, the events before the snapshot (which start-up does not fold) are walked
    in the background; the tail after it was verified by start-up itself. From then on
    every commit wakes one task that walks from the verified position, with its hash,
    to the head: a burst of commits is one walk. Answers about the chain (REST, /health)
    read this state and never walk.

    An incremental walk only sees the rows after the verified position: an edit of a row
    already verified shows in a fresh full walk (`walk_afresh`), one at a time; what it
    finds replaces the state. Walks, and archiving (`rows_moving`), which moves rows
    they read, take turns."""

    def __init__(self, store: EventLog, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.state: ChainState = "verifying"
        self.position = 0  # verified from position 1 up to here...
        self.hash = GENESIS_HASH  # ...whose hash is this
        self.verified_at: float | None = None  # when a walk last ended intact
        self.broken_at: int | None = None
        self.reason: str | None = None  # why it is broken, or could not be verified
        self.error: str | None = None  # the sentence for /health and the log
        self.walks = 0  # incremental walks run (a burst of commits is one)
        self.full_walks = 0  # fresh full walks started
        self.full_walk_at: float | None = None  # when the last one ended
        self.waiting = 0  # callers waiting for the fresh full walk
        self._turn = asyncio.Lock()
        self._wake = asyncio.Event()
        self._history_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._walk: asyncio.Task[ChainReport] | None = None

    @property
    def walking(self) -> bool:
        """A fresh full walk is running."""
        return self._walk is not None and not self._walk.done()

    def start(self, snapshot_position: int, tail_position: int, tail_hash: str) -> None:
        """Check the history up to `snapshot_position`, then follow the head from
        `tail_position` (with `tail_hash`), which start-up verified."""
        self._task = asyncio.create_task(
            self._follow(snapshot_position, tail_position, tail_hash), name="verify-chain"
        )

    def wake(self) -> None:
        """A commit landed: walk to the head when next possible."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def rows_moving(self) -> AsyncIterator[None]:
        """Hold off every walk while rows move (archiving): a walk reading the archive
        and the database as they change would miss rows, and call the log broken."""
        await self._history_done.wait()
        async with self._turn:
            yield

    async def stop(self) -> None:
        for task in (self._task, self._walk):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = None
        self._history_done.set()  # nobody waits for a check that will not end

    async def walk_afresh(self, run: FullWalk) -> ChainReport:
        """Walk the whole chain again with `run` (off the event loop: the service runs
        the CLI's verify in a child process) and adopt what it finds. While one walk
        runs, a second caller waits for the same result."""
        if self._walk is None or self._walk.done():
            self._walk = asyncio.create_task(self._walk_afresh(run), name="verify-afresh")
            # Retrieved here too, should every caller have stopped waiting.
            self._walk.add_done_callback(lambda t: t.cancelled() or t.exception())
        self.waiting += 1
        try:
            return await asyncio.shield(self._walk)
        finally:
            self.waiting -= 1

    async def _walk_afresh(self, run: FullWalk) -> ChainReport:
        async with self._turn:
            self.full_walks += 1
            report = await run()
            self.full_walk_at = self.clock()
            if report.ok:
                # Incremental walks may have got further than the walk's own head.
                if self.state != "intact" or report.last_position > self.position:
                    self.position, self.hash = report.last_position, report.last_hash
                self._intact()
                self.wake()  # on from there, to the head
            else:
                self._broken(report)
            return report

    async def _follow(self, snapshot_position: int, tail_position: int, tail_hash: str) -> None:
        try:
            async with self._turn:
                await self._check_history(snapshot_position, tail_position, tail_hash)
        finally:
            self._history_done.set()
        failed = False
        while True:
            if failed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_SECONDS):
                        await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake.clear()
            async with self._turn:
                failed = not await self._extend()

    async def _check_history(
        self, snapshot_position: int, tail_position: int, tail_hash: str
    ) -> None:
        """Start-up checked the chain after the snapshot and folded that; the events
        before it are checked here, as a large log takes seconds. A break there makes
        the database unhealthy: the log would serve edited events."""
        if snapshot_position:
            try:
                report = await verify_chain(self.store, to_position=snapshot_position)
            except Exception as exc:  # an unreadable archive segment, a read that failed
                self.state = "unverified"
                self.reason = str(exc)
                self.error = f"could not verify the event log before the snapshot: {exc}"
                log.warning("%s", self.error)
                return
            if not report.ok:
                self._broken(report)
                return
        self.position, self.hash = tail_position, tail_hash
        self._intact()

    async def _extend(self) -> bool:
        """Walk on from the verified position to the head; False if the log could not
        be read (tried again later)."""
        head = self.store.head
        if self.state != "intact" or head <= self.position:
            return True
        self.walks += 1
        try:
            report = await verify_chain(
                self.store,
                after=self.position,
                after_hash=self.hash,
                to_position=head,
                as_far_as_visible=True,
            )
        except Exception as exc:  # a read that failed: the database is checked elsewhere
            log.warning("could not verify the event log after position %d: %s", self.position, exc)
            return False
        if not report.ok:
            self._broken(report)
            return True
        self.position, self.hash = report.last_position, report.last_hash
        self._intact()
        # Rows not visible yet (or deleted: start-up's check names those) are walked on
        # the next commit, or within RETRY_SECONDS.
        return self.position >= head

    def _intact(self) -> None:
        self.state = "intact"
        self.verified_at = self.clock()
        self.broken_at = self.reason = self.error = None

    def _broken(self, report: ChainReport) -> None:
        self.state = "broken"
        self.position, self.hash = report.last_position, report.last_hash
        self.broken_at, self.reason = report.broken_at, report.reason
        self.error = (
            f"the event log is corrupt at position {report.broken_at}: {report.reason}."
            " Run `python -m cryptomon verify` for details"
        )
        log.error("%s", self.error)


async def export_jsonl(
    store: EventLog,
    out: BinaryIO,
    *,
    from_position: int = 1,
    to_position: int | None = None,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
) -> int:
    """Write events in [from_position, to_position] and [since, until) to `out`,
    one JSON object a line; return how many were written."""
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    count = 0
    async for row in iter_log_rows(
        store, after=from_position - 1, to_position=to_position, since=since, until=until
    ):
        encoder.encode_into(ArchivedEvent.of(row), buffer, -1)
        buffer.extend(b"\n")
        count += 1
        if len(buffer) > 1 << 20:
            out.write(buffer)
            buffer.clear()
        if progress is not None and count % 10_000 == 0:
            progress(count)
    out.write(buffer)
    out.flush()
    return count
