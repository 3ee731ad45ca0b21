"""The notifier: a subscriber of the event log that delivers notices at least once.

It folds the log into projections of its own, only those its notices come from
(`FOLDS`; not the read models': their snapshots and the notifier's checkpoint
move independently) and keeps a durable checkpoint, the projections' state and
the position it covers. At start it restores them from the checkpoint and
follows the log from there; each notice a channel wants becomes an outbox row keyed
`channel:event:subject:position` (the subject: an alert's id, an incident's, or a
provider). A channel grouping by incident (the default) gets an availability alert's
notices as its incident's (opened, escalated, closed), one grouping by alert each
alert's; the other alerts go to both alike. Rows are stored as soon as the notifier is
caught up, the checkpoint every so often, and never a checkpoint before the rows it
covers, so a crash re-derives at most the notices after the checkpoint and INSERT OR
IGNORE drops those already stored. Replays and read models never touch the outbox: an
audit replay sends nothing.

Delivery is one task per channel, one request in flight each: a channel that
fails backs off (exponentially, with jitter) on its own, and the others and
the service do not wait for it. A re-notification of an open, unacknowledged
alert (or of an open incident with an alert nobody acknowledged) is keyed by how
many `renotify_interval`s have passed since it was raised (or started), so each
interval sends at most one, and acknowledging stops them.

Without a checkpoint (the first start with channels) it starts from the log's
head: what happened before notifications were configured is not announced.

Where it stores rows and checkpoints, and which channels this process serves, is the
`Outbox`'s: on SQLite every channel, always; on PostgreSQL, shared by several instances,
each channel is derived and delivered by the one instance holding its lock
(`notify.postgres`), and the checkpoint is per channel. A channel this process comes to
hold (its holder died) is taken from its own checkpoint: if that is behind the
projections, they start again from it (the channels already held skip the notices they
stored), and its pending rows are sent. A channel it lets go stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import msgspec

from cryptomon.config import NotificationChannel
from cryptomon.events.log import EventLog, StoreError
from cryptomon.notify.delivery import backoff, create_session, deliver
from cryptomon.notify.messages import (
    decode,
    encode,
    for_channel,
    from_notice,
    incident_renotification,
    renotification,
    subject_of,
    wanted,
)
from cryptomon.notify.outbox import Checkpoint, Outbox, OutboxRow, SqliteOutbox
from cryptomon.projections import (
    INCIDENT_KINDS,
    Notice,
    Projections,
    ProjectionSettings,
    SnapshotMismatch,
)
from cryptomon.projections.providers import UNKNOWN_CATEGORY
from cryptomon.readmodels import fold_log

log = logging.getLogger(__name__)

T = TypeVar("T")
YIELD_EVERY = 64
# Rows buffered while catching up are stored at least this often.
FLUSH_ROWS = 500
# Delivered and given-up rows are kept this long, for /api/notifications and audits;
# older ones are dropped at start and then at a checkpoint once a day.
RETENTION_SECONDS = 30 * 86_400.0
PRUNE_EVERY_SECONDS = 86_400.0
# After taking channels up failed (the outbox's database), tried again this much later.
RETAKE_SECONDS = 5.0
# The projections the notifier folds (its checkpoint holds these alone): alerts, incidents
# and rate limits give its notices, providers the status changes alerts follow and each
# provider's category for the channels' filters, chains and quotes the judgements both
# follow. Metrics and failures would be folded for nothing.
FOLDS = ("maintenance", "chains", "quotes", "providers", "alerts", "incidents", "rate_limits")

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(dict[str, tuple[int, bytes]])


@dataclass(frozen=True, slots=True)
class ChannelStats:
    name: str
    kind: str
    delivered: int  # rows delivered (within the outbox's retention)
    failed: int  # given up, plus rows still pending after a failed attempt
    gave_up: int
    retrying: int
    pending: int  # not delivered yet, retrying included
    last_error: str | None
    last_error_at: float | None
    last_delivered_at: float | None
    # Since this process started, for /metrics counters.
    sent_total: int
    failed_attempts_total: int
    gave_up_total: int
    # Whether this process derives and delivers the channel now (on PostgreSQL another
    # instance may: the counts of pending rows are then that one's to tell).
    delivering: bool


@dataclass(slots=True)
class _Channel:
    """One channel's queue of pending rows and what delivering them has been like."""

    config: NotificationChannel
    rows: dict[str, OutboxRow] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    blocked_until: float = 0.0  # no request before this (wall clock): the channel backs off
    consecutive_failures: int = 0
    renotified: dict[int, int] = field(default_factory=dict)  # alert id -> last slot queued
    # incident id -> the last slot queued of its reminders
    renotified_incidents: dict[int, int] = field(default_factory=dict)
    delivered: int = 0
    gave_up: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivered_at: float | None = None
    sent_total: int = 0
    failed_attempts_total: int = 0
    gave_up_total: int = 0

    @property
    def name(self) -> str:
        return self.config.name

    def next_due(self, now: float) -> OutboxRow | None:
        """The earliest row (by log position) that may be tried now."""
        if now < self.blocked_until:
            return None
        due = [row for row in self.rows.values() if row.next_attempt_at <= now]
        return min(due, key=lambda row: (row.position, row.key)) if due else None

    def seconds_to_next(self, now: float) -> float | None:
        if not self.rows:
            return None
        soonest = min(row.next_attempt_at for row in self.rows.values())
        return max(0.001, max(soonest, self.blocked_until) - now)

    def stats(self, delivering: bool) -> ChannelStats:
        retrying = sum(1 for row in self.rows.values() if row.attempts)
        return ChannelStats(
            name=self.name,
            kind=self.config.kind,
            delivered=self.delivered,
            failed=self.gave_up + retrying,
            gave_up=self.gave_up,
            retrying=retrying,
            pending=len(self.rows),
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            last_delivered_at=self.last_delivered_at,
            sent_total=self.sent_total,
            failed_attempts_total=self.failed_attempts_total,
            gave_up_total=self.gave_up_total,
            delivering=delivering,
        )


def _report(task: asyncio.Task[None]) -> None:
    # A worker that ends by itself is a bug: say so, or notifications stop in silence.
    if not task.cancelled() and (error := task.exception()) is not None:
        # The type only: an exception's text could hold a channel URL with its secret.
        log.error("notifications: task %s stopped (%s)", task.get_name(), type(error).__name__)


def _consume(task: asyncio.Future[Any]) -> None:
    # A shielded write whose caller was cancelled: nobody awaits it, so read its outcome.
    if not task.cancelled():
        task.exception()


class Notifier:
    def __init__(
        self,
        store: EventLog,
        channels: Sequence[NotificationChannel],
        settings: ProjectionSettings,
        *,
        outbox: Outbox | None = None,
        categories: Mapping[str, str] | None = None,
        environ: Mapping[str, str] = os.environ,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
        retry_base: float = 1.0,
        retry_cap: float = 600.0,
        max_attempts: int = 25,
        give_up_after: float = 86_400.0,
        checkpoint_every_events: int = 10_000,
        checkpoint_every_seconds: float = 300.0,
        renotify_check_every: float | None = None,
    ) -> None:
        """`outbox` is where rows and checkpoints go (by default the SQLite log's own).
        `categories` maps provider names to categories for providers the log has not
        registered. `clock` is the time re-notification is judged by; deliveries keep wall
        time. Retries wait `retry_base` doubling to `retry_cap` seconds (with jitter); a row
        is given up after `max_attempts` attempts or `give_up_after` seconds."""
        self.store = store
        self.settings = settings
        self.environ = environ
        self.outbox: Outbox = (
            outbox if outbox is not None else SqliteOutbox(store, [c.name for c in channels])
        )
        self.projections = Projections(settings, only=FOLDS)
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.max_attempts = max_attempts
        self.give_up_after = give_up_after
        self.checkpoint_every_events = checkpoint_every_events
        self.checkpoint_every_seconds = checkpoint_every_seconds
        self._channels = {channel.name: _Channel(channel) for channel in channels}
        self._categories = dict(categories or {})
        self._clock = clock
        self._session = session
        self._own_session = session is None
        intervals = [
            seconds
            for channel in channels
            if (seconds := channel.renotify_interval_seconds) is not None
        ]
        if renotify_check_every is None and intervals:
            renotify_check_every = min(60.0, max(1.0, min(intervals) / 10))
        self.renotify_check_every = renotify_check_every
        self._seed: Projections | None = None
        # The channels this process derives and delivers, each with the position up to
        # which its notices were stored before (by its checkpoint's writer): the follower
        # queues it only those after.
        self._active: dict[str, int] = {}
        self._buffer: list[OutboxRow] = []
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._renotifier: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._checkpoint_position = 0
        self._checkpoint_time = time.monotonic()
        self._caught_up_once = False
        self._pruned_at = time.monotonic()
        # Every notice of the active channels up to this position is stored in the outbox.
        self.stored_position = 0
        self._progress = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether notifications are on here (channels configured, started), whether or not
        this process delivers any of them now."""
        return self._supervisor is not None

    @property
    def checkpoint_position(self) -> int:
        return self._checkpoint_position

    def stats(self) -> list[ChannelStats]:
        return [channel.stats(name in self._active) for name, channel in self._channels.items()]

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self, seed: Projections | None = None) -> None:
        """Start serving the channels the outbox gives this process, now and as that changes.

        Without a checkpoint, start at `seed` (a copy of the read models: cheaper than
        folding the whole log), or else at the log's head."""
        if self._supervisor is not None:
            return
        if not self._channels:
            await self._call(self.outbox.forget())
            return
        self._seed = seed
        await self.outbox.start()
        if self._session is None:
            self._session = create_session()
        self.outbox.changed.clear()
        await self._adopt()
        self._supervisor = asyncio.create_task(self._supervise(), name="notify:channels")
        self._supervisor.add_done_callback(_report)

    async def _supervise(self) -> None:
        while True:
            await self.outbox.changed.wait()
            self.outbox.changed.clear()
            try:
                await self._adopt()
            except StoreError as exc:
                # Half taken up is no state to stay in: let every channel go, and take them
                # up again, each from its checkpoint, a little later.
                log.warning(
                    "notifications: taking up channels failed (%s); again in %gs",
                    exc,
                    RETAKE_SECONDS,
                )
                await self._let_go(set(self._active))
                await asyncio.sleep(RETAKE_SECONDS)
                self.outbox.changed.set()

    async def _adopt(self) -> None:
        """Serve exactly the channels the outbox holds now."""
        held = {name for name in self.outbox.held if name in self._channels}
        lost = set(self._active) - held
        if lost:
            await self._let_go(lost)
        gained = held - set(self._active)
        if gained:
            await self._take(gained)

    async def _let_go(self, names: set[str]) -> None:
        """Stop deriving and delivering `names` at once: their lock is gone (another
        instance takes them), or taking them up failed. A request in flight is abandoned;
        its row stays pending, for the next holder to send (at least once)."""
        tasks = [task for name in names if (task := self._deliveries.pop(name, None))]
        for name in names:
            del self._active[name]
            self._channels[name].rows.clear()
        self._buffer = [row for row in self._buffer if row.channel in self._active]
        if not self._active:
            tasks += [task for task in (self._follower, self._renotifier) if task is not None]
            self._follower = self._renotifier = None
            self._buffer.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("notifications: channels %s are not delivered here now", sorted(names))

    async def _take(self, names: set[str]) -> None:
        """Start deriving and delivering `names`, each from its own checkpoint."""
        checkpoints = await self._call(self.outbox.load_checkpoints(names))
        restart = self._follower is None or any(
            checkpoint.position < self.projections.position for checkpoint in checkpoints.values()
        )
        save_now = False
        if restart:
            if self._follower is not None:
                # The channels held go on from what they stored: skip those notices again.
                await self._halt_follower()
                for name in self._active:
                    self._active[name] = self.projections.position
            # Without any checkpoint (so with no channel held yet): from the seed.
            oldest = min(checkpoints.values(), key=lambda c: c.position, default=None)
            self.projections, save_now = await self._restore(oldest, self._seed)
            self._checkpoint_position = oldest.position if oldest is not None else 0
            self._caught_up_once = False
        position = self.projections.position
        for name in names:
            checkpoint = checkpoints.get(name)
            # No checkpoint: a new channel, which hears of what happens from now on.
            self._active[name] = max(checkpoint.position, position) if checkpoint else position
        await self._load_rows(names)
        if save_now:
            await self._flush(checkpoint=True)
        if restart:
            self._reached(position)
        log.info(
            "notifications: %d channels from position %d; %d waiting to be sent",
            len(names),
            position,
            sum(len(self._channels[name].rows) for name in names),
        )
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow(), name="notifier")
            self._follower.add_done_callback(_report)
        for name in names:
            task = asyncio.create_task(
                self._deliver_loop(self._channels[name]), name=f"notify:{name}"
            )
            task.add_done_callback(_report)
            self._deliveries[name] = task
        if self.renotify_check_every is not None and self._renotifier is None:
            self._renotifier = asyncio.create_task(self._renotify_loop(), name="notify:renotify")
            self._renotifier.add_done_callback(_report)

    async def _load_rows(self, names: set[str]) -> None:
        """The pending rows and the counts of `names`, from the outbox; which reminder each
        open alert last had on them."""
        pruned = await self._prune(names)
        pending = await self._call(self.outbox.load_pending(names))
        counts = await self._call(self.outbox.channel_counts())
        for name in names:
            channel, count = self._channels[name], counts.get(name)
            if count is not None:
                channel.delivered, channel.gave_up = count.delivered, count.failed
                channel.last_delivered_at = count.last_delivered_at
                channel.last_error, channel.last_error_at = count.last_error, count.last_error_at
        now = time.time()
        for row in pending:
            row.next_attempt_at = min(row.next_attempt_at, now)  # taken up: retried at once
            self._channels[row.channel].rows[row.key] = row
        await self._recall_reminders(names)
        if pruned:
            log.info("notifications: %d old rows pruned", pruned)

    async def _halt_follower(self) -> None:
        """Stop following, with what it owes stored and checkpointed."""
        assert self._follower is not None
        self._follower.cancel()
        await asyncio.gather(self._follower, return_exceptions=True)
        self._follower = None
        await self._flush(checkpoint=True)

    async def _restore(
        self, checkpoint: Checkpoint | None, seed: Projections | None
    ) -> tuple[Projections, bool]:
        """The projections to follow from, and whether to save a checkpoint at once."""
        if checkpoint is None:
            projections = None
            if seed is not None:
                with contextlib.suppress(SnapshotMismatch):
                    projections = Projections.restore(
                        seed.snapshot_state(FOLDS), self.settings, only=FOLDS
                    )
            if projections is None:
                projections = Projections(self.settings, only=FOLDS)
                await fold_log(projections, self.store, self.store.head)
            log.info(
                "notifications: no checkpoint; starting at position %d (earlier events are"
                " not announced)",
                projections.position,
            )
            return projections, True
        try:
            restored = Projections.restore(
                _state_decoder.decode(checkpoint.state), self.settings, only=FOLDS
            )
            if restored.position != checkpoint.position:
                raise SnapshotMismatch(
                    f"it covers {restored.position}, saved as {checkpoint.position}"
                )
            if restored.position > self.store.head:
                raise SnapshotMismatch(
                    f"it covers position {restored.position}, the log ends at {self.store.head}"
                )
            return restored, False
        except (SnapshotMismatch, msgspec.DecodeError, msgspec.ValidationError) as exc:
            until = min(checkpoint.position, self.store.head)
            log.warning(
                "notifications: discarding the checkpoint (%s); rebuilding up to position %d"
                " from the log",
                exc,
                until,
            )
            projections = Projections(self.settings, only=FOLDS)
            await fold_log(projections, self.store, until)
            return projections, True

    async def stop(self) -> None:
        """Apply what is committed, store its rows and a checkpoint, stop delivering, let
        the channels go.

        A request in flight is abandoned; its row stays pending and is sent again at the
        next start, or by the next holder of its channel (at least once)."""
        if self._supervisor is not None:
            self._supervisor.cancel()  # no channel taken up or let go from here on
            if self._follower is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10.0):
                        await self.wait_for(self.store.head)
            tasks = [
                task
                for task in (self._supervisor, self._follower, self._renotifier)
                if task is not None
            ]
            tasks += self._deliveries.values()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._supervisor = self._follower = self._renotifier = None
            self._deliveries.clear()
            if self._active:
                try:
                    await self._flush(checkpoint=True)
                except StoreError as exc:
                    log.warning("notifications: the last checkpoint was not saved: %s", exc)
            await self.outbox.close()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def wait_for(self, position: int) -> None:
        """Wait until the notices of every event up to `position` are in the outbox."""
        while self._follower is not None and self.stored_position < position:
            await self._progress.wait()

    def _reached(self, position: int) -> None:
        self.stored_position = position
        signal, self._progress = self._progress, asyncio.Event()
        signal.set()

    async def _call(self, work: Awaitable[T]) -> T:
        """Await the outbox's `work`, shielded: a caller cancelled at shutdown must not
        cancel a write the database has taken on."""
        task = asyncio.ensure_future(work)
        task.add_done_callback(_consume)
        return await asyncio.shield(task)

    # ---- following the log -------------------------------------------------------

    async def _follow(self) -> None:
        if self.projections.position >= self.store.head:
            self._caught_up_once = True
        async for recorded in self.store.subscribe(after=self.projections.position):
            notices = self.projections.apply(recorded)
            if notices:
                self._queue(notices)
            caught_up = recorded.position >= self.store.head
            self._caught_up_once = self._caught_up_once or caught_up
            checkpoint = self._checkpoint_due(caught_up)
            if checkpoint or (self._buffer and (caught_up or len(self._buffer) >= FLUSH_ROWS)):
                await self._flush(checkpoint)
            elif not self._buffer:
                self._reached(recorded.position)
            if recorded.position % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _category(self, provider: str | None) -> str | None:
        if provider is None:
            return None  # the service's own alert
        state = self.projections.providers.get(provider)
        if state is not None and state.category != UNKNOWN_CATEGORY:
            return state.category
        return self._categories.get(provider)

    def _queue(self, notices: list[Notice]) -> None:
        now = time.time()
        for notice in notices:
            subject = subject_of(notice)
            if subject is None:
                continue
            if (
                subject.event == "rate_limit"
                and subject.provider is not None
                and self.projections.maintenance.covering(subject.provider, notice.at)
            ):
                continue  # in a maintenance window nobody is told (alerts are not raised)
            category = self._category(subject.provider)
            for name, stored_up_to in self._active.items():
                channel = self._channels[name]
                if notice.position <= stored_up_to:
                    continue  # stored before this process took the channel up
                if not for_channel(channel.config, subject) or not wanted(
                    channel.config, subject.event, subject.severity, subject.provider, category
                ):
                    continue
                note = from_notice(channel.name, notice, subject, category)
                self._buffer.append(
                    OutboxRow(
                        note.idempotency_key, channel.name, notice.position, encode(note), now, now
                    )
                )

    def _checkpoint_due(self, caught_up: bool) -> bool:
        behind = self.projections.position - self._checkpoint_position
        if behind >= self.checkpoint_every_events:
            return True
        return (
            caught_up
            and behind > 0
            and time.monotonic() - self._checkpoint_time >= self.checkpoint_every_seconds
        )

    async def _flush(self, checkpoint: bool) -> None:
        rows, self._buffer = self._buffer, []
        position = self.projections.position
        saved = None
        if checkpoint:
            state = _state_encoder.encode(self.projections.snapshot_state())
            saved = Checkpoint(position, state)
        try:
            await self._store(rows, saved)
        except StoreError as exc:
            self._buffer[:0] = rows  # tried again with the next event, or at stop
            log.warning("notifications: could not store %d outbox rows: %s", len(rows), exc)
            return
        if saved is not None:
            self._checkpoint_position = position
            self._checkpoint_time = time.monotonic()
            if self._checkpoint_time - self._pruned_at >= PRUNE_EVERY_SECONDS:
                await self._prune(set(self._active))
        self._reached(position)

    async def _prune(self, names: set[str]) -> int:
        """Drop finished rows past retention (those the checkpoint covers: see outbox.prune).
        The counts shown keep them: delivered and failed count the whole history of the
        outbox until the next start."""
        before, covered = time.time() - RETENTION_SECONDS, self._checkpoint_position
        self._pruned_at = time.monotonic()
        try:
            return await self._call(self.outbox.prune(before, covered, names))
        except StoreError as exc:
            log.warning("notifications: pruning the outbox failed: %s", exc)
            return 0

    async def _store(self, rows: list[OutboxRow], checkpoint: Checkpoint | None) -> int:
        if not rows and checkpoint is None:
            return 0
        channels = frozenset(self._active)

        async def work() -> int:
            inserted = await self.outbox.store_rows(rows, checkpoint, channels, time.time())
            # Queued in the shielded task, so rows committed for a cancelled caller are
            # delivered all the same (by this process, while it holds their channel).
            for row in inserted:
                if row.channel in self._active:
                    channel = self._channels[row.channel]
                    channel.rows[row.key] = row
                    channel.wake.set()
            return len(inserted)

        return await self._call(work())

    # ---- re-notification -----------------------------------------------------------

    async def check_renotify(self) -> int:
        """Queue a reminder of each open, unacknowledged alert a channel with a
        `renotify_interval` wants, once per interval since it was raised (none while a
        maintenance window covers its provider); a channel grouping by incident is reminded
        of each open incident with an alert nobody acknowledged instead of its alerts.
        Return how many were queued."""
        if not self._caught_up_once:
            return 0  # the alerts may be long resolved in the part of the log not yet read
        now = self._clock()
        wall = time.time()
        rows: list[OutboxRow] = []
        # An alert open when a maintenance window began stays open (nothing in the window
        # judges it), but no reminder of it goes out while the window covers its provider.
        windows = self.projections.maintenance
        open_alerts = [
            alert
            for alert in self.projections.alerts.query(acknowledged=False, open_only=True)
            if alert.provider is None or windows.covering(alert.provider, now) is None
        ]
        open_incidents = [
            incident
            for incident in self.projections.incidents.query(open_only=True)
            if windows.covering(incident.provider, now) is None
            and any(a.resolved_at is None and not a.acknowledged for a in incident.alerts)
        ]
        for name in self._active:
            channel = self._channels[name]
            interval = channel.config.renotify_interval_seconds
            if interval is None:
                continue
            grouped = channel.config.group == "incident"
            remembered, channel.renotified = channel.renotified, {}
            for alert in open_alerts:
                if grouped and alert.kind in INCIDENT_KINDS:
                    continue  # its incident is reminded of
                category = self._category(alert.provider)
                if not wanted(channel.config, "raised", alert.severity, alert.provider, category):
                    continue
                slot = int((now - alert.raised_at) // interval)
                channel.renotified[alert.id] = max(slot, remembered.get(alert.id, 0))
                if slot < 1 or remembered.get(alert.id, 0) >= slot:
                    continue
                note = renotification(channel.name, alert, slot, category, now)
                rows.append(
                    OutboxRow(
                        note.idempotency_key, channel.name, alert.position, encode(note), wall, wall
                    )
                )
            if not grouped:
                continue
            reminded, channel.renotified_incidents = channel.renotified_incidents, {}
            for incident in open_incidents:
                category = self._category(incident.provider)
                if not wanted(
                    channel.config, "raised", incident.severity, incident.provider, category
                ):
                    continue
                slot = int((now - incident.started_at) // interval)
                last = reminded.get(incident.id, 0)
                channel.renotified_incidents[incident.id] = max(slot, last)
                if slot < 1 or last >= slot:
                    continue
                note = incident_renotification(channel.name, incident, slot, category, now)
                rows.append(
                    OutboxRow(
                        note.idempotency_key,
                        channel.name,
                        incident.position,
                        encode(note),
                        wall,
                        wall,
                    )
                )
        return await self._store(rows, None)

    async def _recall_reminders(self, names: set[str]) -> None:
        """Which reminder each open, unacknowledged alert (and each open incident) last had
        on each channel, from the outbox, so a restart does not remind of it again in the
        same interval.

        The key names the alert by its id, which the alerts fold gives in the order it
        raises them, and a rebuild under other rules (an upgrade) may number them
        otherwise: the same reminder would get another key. So the stored message is
        matched by the alert's name (position, provider, kind) instead, an incident's by
        the position of the event that opened it and its provider. Only for the channels
        `names` (taken up now): the others' memory is current."""
        if self.renotify_check_every is None:
            return
        open_alerts = self.projections.alerts.query(acknowledged=False, open_only=True)
        open_incidents = self.projections.incidents.query(open_only=True)
        if not open_alerts and not open_incidents:
            return
        by_name: dict[tuple[int, str, str], int] = {
            (a.position, a.provider or "", a.kind): a.id for a in open_alerts
        }
        incidents_by_name = {(i.position, i.provider): i.id for i in open_incidents}
        since = min([position for position, _, _ in by_name] + [p for p, _ in incidents_by_name])
        for key, payload in await self._call(self.outbox.reminders(since)):
            try:
                note = decode(payload)
                slot = int(key.rsplit(":", 1)[1])
            except (msgspec.DecodeError, msgspec.ValidationError, IndexError, ValueError):
                continue
            if note.channel not in names:
                continue
            channel = self._channels[note.channel]
            if note.event == "incident_renotify" and note.incident is not None:
                name = (note.incident.position, note.provider or "")
                incident_id = incidents_by_name.get(name)
                if incident_id is not None:
                    last = channel.renotified_incidents.get(incident_id, 0)
                    channel.renotified_incidents[incident_id] = max(slot, last)
                continue
            if note.event != "renotify" or note.alert is None:
                continue
            alert_id = by_name.get((note.alert.position, note.provider or "", note.alert.kind))
            if alert_id is not None:
                channel.renotified[alert_id] = max(slot, channel.renotified.get(alert_id, 0))

    async def _renotify_loop(self) -> None:
        assert self.renotify_check_every is not None
        while True:
            await asyncio.sleep(self.renotify_check_every)
            try:
                await self.check_renotify()
            except StoreError as exc:
                log.warning("notifications: re-notification check failed: %s", exc)

    # ---- delivery ----------------------------------------------------------------------

    async def _deliver_loop(self, channel: _Channel) -> None:
        while True:
            channel.wake.clear()
            row = channel.next_due(time.time())
            if row is None:
                wait = channel.seconds_to_next(time.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await channel.wake.wait()
                continue
            try:
                await self._attempt(channel, row)
            except StoreError as exc:
                log.warning("notifications: outbox update for %r failed: %s", channel.name, exc)
            except Exception as exc:  # a bug must not end this channel's deliveries for good
                # Only the type: an exception's text could hold a channel URL with its secret.
                log.error(
                    "notifications: delivery to %r failed unexpectedly (%s)",
                    channel.name,
                    type(exc).__name__,
                )
                channel.blocked_until = time.time() + self.retry_cap

    async def _attempt(self, channel: _Channel, row: OutboxRow) -> None:
        age = time.time() - row.created_at
        if age > self.give_up_after:
            await self._give_up(channel, row, f"not delivered within {self.give_up_after:g}s")
            return
        try:
            notification = decode(row.payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            await self._give_up(channel, row, "the stored message does not decode")
            return
        assert self._session is not None
        outcome = await deliver(self._session, channel.config, notification, self.environ)
        at = time.time()
        row.attempts += 1
        if outcome.ok:
            channel.rows.pop(row.key, None)
            channel.consecutive_failures = 0
            channel.blocked_until = 0.0
            attempts = row.attempts
            try:
                await self._call(self.outbox.mark_delivered(row.key, attempts, at))
            finally:
                # The receiver has it whether or not the row was marked: a send to count.
                channel.sent_total += 1
            # Only once the outbox says so: stats must not claim what a crash would undo.
            channel.delivered += 1
            channel.last_delivered_at = at
            return
        error = outcome.error or "failed"
        channel.consecutive_failures += 1
        channel.failed_attempts_total += 1
        channel.last_error, channel.last_error_at = error, at
        delay = backoff(
            max(row.attempts, channel.consecutive_failures), self.retry_base, self.retry_cap
        )
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, self.retry_cap))
        channel.blocked_until = at + delay
        if row.attempts >= self.max_attempts:
            await self._give_up(channel, row, error)
            return
        row.next_attempt_at = at + delay
        log.warning(
            "notifications: %s to channel %r failed (attempt %d): %s; next try in %.1fs",
            row.key,
            channel.name,
            row.attempts,
            error,
            delay,
        )
        await self._call(self.outbox.mark_failed(row, error, at, gave_up=False))

    async def _give_up(self, channel: _Channel, row: OutboxRow, error: str) -> None:
        at = time.time()
        channel.rows.pop(row.key, None)
        channel.last_error, channel.last_error_at = error, at
        log.error(
            "notifications: giving up on %s to channel %r after %d attempts: %s",
            row.key,
            channel.name,
            row.attempts,
            error,
        )
        await self._call(self.outbox.mark_failed(row, error, at, gave_up=True))
        # After the write, as for a delivery: a give-up counted is a give-up stored.
        channel.gave_up += 1
        channel.gave_up_total += 1
