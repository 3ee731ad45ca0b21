"""Keeping the projections current with the log.

At start the latest snapshot is loaded (or discarded, with the reason logged,
when it is corrupt or from another projection version) and only the tail
after it is folded. Then every committed event is applied as it arrives and
its notices go to the listeners (the live feed); a replay drops notices.
Snapshots are taken every so many events or seconds, and at stop. The hash chain
is checked as it grows (`ChainCheck`): the tail before it is folded, the history
before the snapshot in the background, then every commit as it lands.

A replay folds in this process, a page of columns at a time (`fold_log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptomon.config import Config, parse_duration, parse_uint
from cryptomon.events.archive import iter_log_rows, log_segments
from cryptomon.events.audit import ChainCheck, ChainReport, ChainState, verify_chain
from cryptomon.events.chain import GENESIS_HASH
from cryptomon.events.log import EventLog, StoreError
from cryptomon.events.types import RecordedEvent
from cryptomon.projections import (
    Notice,
    Projections,
    ProjectionSettings,
    SnapshotMismatch,
    with_needs,
)
from cryptomon.projections.settings import ChainSettings

log = logging.getLogger(__name__)

YIELD_EVERY = 64
# Events a replay reads at a time. Larger pages fold faster, for reasons not pinned down
# (1M-event replay, events per CPU second: about 142,000 at 5,000 a page, 161,000 at 20,000,
# 178,000 at 50,000); a page of 50,000 holds about 40 MB while it is folded.
REPLAY_PAGE_SIZE = 50_000
Listener = Callable[[RecordedEvent, list[Notice]], None]
Progress = Callable[[int], None]


def projection_settings(config: Config) -> ProjectionSettings:
    return ProjectionSettings(
        maintenance_counts_in_uptime=config.monitoring.maintenance_counts_in_uptime,
        incident_retention_seconds=config.storage.incident_retention_seconds,
        chains=tuple(
            ChainSettings(
                name=name,
                chain_id=None if chain.chain_id is None else parse_uint(chain.chain_id),
                lag_blocks=chain.lag_blocks,
                lag_probes=chain.lag_probes,
                stale_blocks=chain.stale_blocks,
                stale_after_seconds=(
                    None if chain.stale_after is None else parse_duration(chain.stale_after)
                ),
            )
            for name, chain in sorted(config.chains.items())
        ),
        quote_deviation_percent=config.quotes.deviation_percent,
        quote_deviation_probes=config.quotes.deviation_probes,
        quote_max_staleness_seconds=config.quotes.max_staleness_seconds,
    )


class SnapshotAheadOfLog(StoreError):
    """The snapshot covers positions the log does not have: serving from it would be wrong."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    snapshot_position: int  # 0 when built from the start of the log
    tail_events: int
    discarded: str | None  # why a snapshot was not used, if there was one
    # The projections the snapshot had no current state of, folded from the start of the
    # log up to its position (the rest continued from it).
    rebuilt: tuple[str, ...] = ()
    # Where start-up's check of the tail's hash chain ended: the position and its hash.
    verified_position: int = 0
    verified_hash: str = GENESIS_HASH


async def load_projections(
    store: EventLog, settings: ProjectionSettings, progress: Progress | None = None
) -> tuple[Projections, LoadReport]:
    """The projections as of the store's head: snapshot plus tail, or a rebuild."""
    projections, discarded = await _from_snapshot(store, settings)
    if projections.position > store.head:
        raise SnapshotAheadOfLog(
            f"the snapshot covers position {projections.position} but the log at {store.location}"
            f" ends at {store.head}: events are missing; refusing to serve from it"
        )
    rebuilt = projections.stale
    if rebuilt:
        await _rebuild_stale(projections, store)
    # One writer's sequence remembers deleted rows. (Where several instances write, as on
    # PostgreSQL, it moves with their commits while this store's head waits to hear of them.)
    high_water = await store.sequence_high_water() if store.single_writer else 0
    if high_water > store.head:
        raise CorruptLog(
            f"the event log at {store.location} ends at {store.head} but positions up to"
            f" {high_water} were written: the rows after {store.head} were deleted;"
            " refusing to serve from it. Run `python -m cryptomon verify` for details"
        )
    start = projections.position
    verified = await verify_tail(store, start)
    tail = await fold_log(projections, store, store.head, progress)
    report = LoadReport(start, tail, discarded, rebuilt, verified.last_position, verified.last_hash)
    return projections, report


class CorruptLog(StoreError):
    """The log after the snapshot fails its hash chain: serving it would be wrong."""


async def verify_tail(store: EventLog, after: int) -> ChainReport:
    """Check the hash chain of the events the start-up is about to fold (the
    tail after the snapshot, up to the head); refuse, naming the position, if it breaks."""
    previous_hash = GENESIS_HASH
    if after:
        async for row in iter_log_rows(store, after=after - 1, to_position=after):
            previous_hash = row.hash
    report = await verify_chain(
        store, after=after, after_hash=previous_hash, to_position=store.head
    )
    if not report.ok:
        raise CorruptLog(
            f"the event log at {store.location} is corrupt at position {report.broken_at}"
            " (the hash chain breaks there); refusing to serve from it."
            " Run `python -m cryptomon verify` for details"
        )
    return report


async def _from_snapshot(
    store: EventLog, settings: ProjectionSettings
) -> tuple[Projections, str | None]:
    snapshots = await store.load_snapshots()
    if not snapshots:
        return Projections(settings), None
    broken = sorted(name for name, snapshot in snapshots.items() if not snapshot.intact)
    if broken:
        reason = f"snapshot of {', '.join(broken)} is corrupt (checksum mismatch)"
    else:
        try:
            restored = Projections.restore(
                {name: (s.version, s.state) for name, s in snapshots.items()},
                settings,
                partial=True,
            )
        except SnapshotMismatch as exc:
            reason = str(exc)
        else:
            return restored, None
    log.warning("discarding the projection snapshot: %s; rebuilding from the log", reason)
    return Projections(settings), reason


async def _rebuild_stale(restored: Projections, store: EventLog) -> None:
    """Fold the projections the snapshot had no usable state of from the start of the log
    up to its position, the others as they were restored."""
    log.info(
        "the snapshot has no current state of %s; folding them from the start of the log"
        " up to position %d",
        ", ".join(restored.stale),
        restored.position,
    )
    rebuilt = Projections(restored.settings, only=with_needs(restored.stale))
    await fold_log(rebuilt, store, restored.position)
    restored.adopt(rebuilt)


async def fold_log(
    projections: Projections, store: EventLog, until: int, progress: Progress | None = None
) -> int:
    """Fold the log (archive included) after the projections' position up to
    `until`, without notices; return how many events were folded."""
    folded = 0
    fold = projections.fold
    known = log_segments(store)
    archived_up_to = min(known[-1][1], until) if known else 0
    if projections.position < archived_up_to:
        # Archived probes interleave with events still in the database: merge them.
        async for row in iter_log_rows(
            store, after=projections.position, to_position=archived_up_to
        ):
            fold(row.decode())
            folded += 1
            if progress is not None and folded % 10_000 == 0:
                progress(folded)
    with _collector_paused():
        # Only the columns a fold reads, in large pages: the replay's hot path.
        pages = store.replay_pages(
            after=projections.position, to_position=until, page_size=REPLAY_PAGE_SIZE
        )
        async for positions, times, events in pages:
            projections.fold_columns(positions, times, events)
            folded += len(events)
            if progress is not None:
                progress(folded)
    return folded


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off while a replay reads and folds pages.
    Each page allocates thousands of row tuples, and the collector's passes over them
    took 6% of a replay (measured); a fold makes no reference cycles. Other tasks running
    meanwhile only have their cycles collected later, when the collector is back on."""
    if not gc.isenabled():
        yield  # someone else paused it; they turn it back on
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ReadModels:
    """The live projections of one running service."""

    def __init__(
        self,
        store: EventLog,
        settings: ProjectionSettings,
        *,
        snapshot_every_events: int = 50_000,
        snapshot_every_seconds: float = 300.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.projections = Projections(settings)
        self.snapshot_every_events = snapshot_every_events
        self.snapshot_every_seconds = snapshot_every_seconds
        self.listeners: list[Listener] = []
        self.load_report: LoadReport | None = None
        self._follower: asyncio.Task[None] | None = None
        self._snapshot_position = 0
        self._snapshot_time = time.monotonic()
        # (position, future) of callers waiting for the read models to reach a position
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_sequence = 0
        # The hash chain: the history before the snapshot (start-up doesn't fold it),
        # then every commit as it lands.
        self.chain = ChainCheck(store)

    @property
    def position(self) -> int:
        return self.projections.position

    @property
    def following(self) -> bool:
        """Applying the log as it grows: started, not stopped, and not ended by an error
        (then the read models would answer from a position that never moves again)."""
        return self._follower is not None and not self._follower.done()

    @property
    def history(self) -> ChainState:
        """The chain check's state: a break makes the database unhealthy (/health)."""
        return self.chain.state

    @property
    def history_error(self) -> str | None:
        return self.chain.error

    async def start(self) -> LoadReport:
        self.projections, self.load_report = await load_projections(self.store, self.settings)
        self._snapshot_position = self.load_report.snapshot_position
        if self.load_report.discarded is not None or self.load_report.tail_events:
            await self.save_snapshot()
        self._follower = asyncio.create_task(self._follow(), name="read-models")
        report = self.load_report
        self.chain.start(report.snapshot_position, report.verified_position, report.verified_hash)
        return self.load_report

    async def stop(self) -> None:
        """Fold what is committed, snapshot, stop following."""
        await self.chain.stop()
        if self._follower is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self.wait_for(self.store.head)
        self._follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._follower
        self._follower = None
        await self.save_snapshot()

    async def save_snapshot(self) -> None:
        position = self.projections.position
        await self.store.save_snapshots(self.projections.snapshot_state(), position)
        self._snapshot_position = position
        self._snapshot_time = time.monotonic()

    async def wait_for(self, position: int) -> None:
        """Wait until events up to `position` are applied (read-your-writes)."""
        if self.projections.position >= position:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter_sequence += 1
        heapq.heappush(self._waiters, (position, self._waiter_sequence, future))
        await future

    async def _follow(self) -> None:
        waiters = self._waiters
        async for recorded in self.store.subscribe(after=self.projections.position):
            notices = self.projections.apply(recorded)
            self.chain.wake()
            for listener in self.listeners:
                listener(recorded, notices)
            if recorded.position % YIELD_EVERY == 0:
                # A big batch arrives without a pause; let listeners' consumers
                # (live-feed senders) drain their queues before more is queued.
                await asyncio.sleep(0)
            while waiters and waiters[0][0] <= recorded.position:
                future = heapq.heappop(waiters)[2]
                if not future.done():
                    future.set_result(None)
            if recorded.position == self.store.head and self._snapshot_due():
                try:
                    await self.save_snapshot()
                except StoreError as exc:
                    log.warning("snapshot failed: %s", exc)

    def _snapshot_due(self) -> bool:
        behind = self.projections.position - self._snapshot_position
        return behind >= self.snapshot_every_events or (
            behind > 0 and time.monotonic() - self._snapshot_time >= self.snapshot_every_seconds
        )
