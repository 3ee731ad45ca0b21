"""The live feed's hub: turns read-model notices into frames and fans them out.

Every frame is encoded once. Published frames wait in one pending list that a
flush, at most every `flush_seconds`, sends on: the waiting frames are joined
once per distinct topic set and that one bytes object is written straight to
every client that has nothing else waiting (the fast path: one write per
client per flush, whatever the event rate). A client with anything waiting
(its greeting, history, replies, or a socket buffer past the high-water mark)
gets the frames appended to its bounded queue instead, behind what waits, and
a sender task of its own, started then and gone once the queue is empty,
delivers them in order; an idle client holds no task. So a slow client never
delays the others or the event log: when its queue is full it is closed with
1013 (try again later) and can resume by position.

Recent frames are kept in a ring, so a client that reconnects with
`since=<position>` gets everything after it with no gap and no duplicate.
Older positions are re-read from the log, archive segments included: events
and log entries are derived from it again; status and alert notices are not
kept that long, and a `resync` message says so (and names any positions the
log could not be read at, which were not sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable

from aiohttp import WSCloseCode, web

from cryptomon.events.archive import iter_log_rows
from cryptomon.events.log import EventLog
from cryptomon.events.types import ProbeRecorded, RecordedEvent
from cryptomon.isotime import iso_time
from cryptomon.projections import Notice
from cryptomon.projections.notices import log_entries
from cryptomon.readmodels import ReadModels
from cryptomon.ws import messages
from cryptomon.ws.messages import (
    EVENTS_TOPIC,
    PROVIDER_TOPIC_PREFIX,
    ErrorMessage,
    Frame,
    HeadUpdate,
    Ping,
    Resync,
    StatusUpdate,
    encode,
    event_frame,
    notice_frame,
)

log = logging.getLogger(__name__)

# Frames every client gets whatever it subscribed to: pings, errors, replies.
CONTROL = "control"
# What a client gets until it subscribes or unsubscribes: not the opt-in topics.
DEFAULT_TOPICS = frozenset(messages.DEFAULT_TOPICS)
# One write to a client carries at most this much; past the high-water mark
# of its socket buffer the client is waited for (and dropped if its queue fills).
BATCH_BYTES = 256 * 1024
HIGH_WATER = 1 << 20
DRAIN_POLL_SECONDS = 0.02
TRY_AGAIN_LATER = 1013  # RFC 6455 registry: the server is overloaded, come back later
HISTORY_PAGE = 1000
# A resync names at most this many ranges of positions it could not send.
MAX_UNSENT_RANGES = 10
# How often waiting frames are flushed to the clients. Each flush costs one write
# (a send syscall) per client whatever it carries, so at 1,000 clients this, not the
# event rate, sets the syscall rate; it adds at most this much to the delivery latency.
# Measured at 1,000 clients: 10 ms against 20 ms, 25 ms and an adaptive gap (a multiple
# of the last flush's duration, up to 25 or 50 ms) - only the 50 ms cap saved CPU, and
# it cost p99 more than the goal allows.
FLUSH_SECONDS = 0.01


class Client:
    """One connected socket: what it wants, what waits to be sent to it."""

    # Slots: thousands of idle clients each save the cost of an attribute dict.
    __slots__ = (
        "chosen", "client_id", "closing", "connected_at", "greeting", "history",
        "history_from_log", "last_ping", "last_seen", "max_queue", "queue", "replaying",
        "sender", "sent", "skip", "topics", "transport", "ws",
    )  # fmt: skip

    def __init__(
        self,
        client_id: str,
        ws: web.WebSocketResponse,
        transport: asyncio.WriteTransport,
        max_queue: int,
    ) -> None:
        self.client_id = client_id
        self.ws = ws
        # Frames are written straight to the socket, many at a time (see send_loop).
        self.transport = transport
        # Shared until the client changes it: most never do.
        self.topics: frozenset[str] = DEFAULT_TOPICS
        # False while the topics are the default set, which a subscribe replaces.
        self.chosen = False
        self.queue: deque[Frame] = deque()
        self.max_queue = max_queue
        # Runs only while something waits for this client (see Hub.wake).
        self.sender: asyncio.Task[None] | None = None
        self.connected_at = time.time()
        self.last_seen = time.monotonic()
        self.last_ping: float | None = None
        self.sent = 0
        self.closing = False
        # Sent ahead of the live queue: a greeting, then what came before the
        # client attached (older positions re-read from the log).
        self.greeting: Frame | None = None
        self.history: deque[Frame] = deque()
        self.history_from_log: tuple[int, int] | None = None
        # True while the sender writes history read from the log: live frames wait.
        self.replaying = False
        # The hub's pending frames this client already has (in its history) or
        # must not get (they came before its greeting): skipped at the next flush.
        self.skip = 0

    def on_fast_path(self) -> bool:
        """Nothing waits to go before a live frame: it may be written straight away."""
        return not (
            self.queue
            or self.history
            or self.greeting is not None
            or self.history_from_log is not None
            or self.replaying
            or self.closing
            or self.transport.is_closing()
            or self.transport.get_write_buffer_size() > HIGH_WATER
        )

    def subscribe(self, topics: frozenset[str]) -> None:
        """The first subscribe replaces the default set (a client asking for `events`
        alone gets just those); later ones, or one after an unsubscribe, add."""
        self.topics = self.topics | topics if self.chosen else topics
        self.chosen = True

    def unsubscribe(self, topics: frozenset[str]) -> None:
        # What is left is the client's choice: a subscribe after this adds to it.
        self.topics = self.topics - topics
        self.chosen = True

    def wants(self, frame: Frame) -> bool:
        topic = frame.topic
        return (
            topic == CONTROL
            or topic in self.topics
            # Raw events go only to `events`: a provider's topic carries the rest about it.
            or (
                frame.provider is not None
                and topic != EVENTS_TOPIC
                and PROVIDER_TOPIC_PREFIX + frame.provider in self.topics
            )
        )

    def offer(self, frame: Frame) -> bool:
        """Queue a frame without waiting (Hub.wake sends it); False when the queue is full."""
        if len(self.queue) >= self.max_queue:
            return False
        self.queue.append(frame)
        return True


class Hub:
    def __init__(
        self,
        store: EventLog,
        models: ReadModels,
        *,
        status_interval: float = 10.0,
        heartbeat_interval: float = 30.0,
        max_queue: int = 1000,
        ring_capacity: int = 20_000,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.store = store
        self.models = models
        self.status_interval = status_interval
        self.heartbeat_interval = heartbeat_interval
        self.max_queue = max_queue
        self.clients: dict[str, Client] = {}
        self.ring: deque[Frame] = deque(maxlen=ring_capacity)
        self.position = models.position  # the last position whose frames are in the ring
        self._first_position = models.position  # the ring holds frames after this one
        self.dropped = 0
        self.messages_sent = 0
        self.disconnects: Counter[str] = Counter()
        self.flush_seconds = flush_seconds
        self.pending: list[Frame] = []  # published, not yet flushed to the clients
        self._flush_handle: asyncio.TimerHandle | None = None
        self._last_flush = 0.0
        self._next_id = 0
        self._tasks: list[asyncio.Task[None]] = []
        # Each chain node's head as the last head_update (or the read models at start) had it.
        self._heads: dict[str, int] = {
            node.provider: node.head
            for chain in models.projections.chains.all()
            for node in chain.nodes.values()
            if node.head is not None
        }
        models.listeners.append(self.publish)

    # ---- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._status_loop(), name="ws-status"),
            asyncio.create_task(self._heartbeat_loop(), name="ws-heartbeat"),
        ]

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    async def stop(self) -> None:
        """Stop the timers and close every socket with 1001 (going away)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.flush()  # what was published goes out before the close frames
        await asyncio.gather(
            *(
                self.close(c, WSCloseCode.GOING_AWAY, "server_shutdown")
                for c in list(self.clients.values())
            ),
            return_exceptions=True,
        )

    # ---- clients -------------------------------------------------------------

    def new_client(self, ws: web.WebSocketResponse, transport: asyncio.WriteTransport) -> Client:
        self._next_id += 1
        return Client(f"client_{self._next_id}", ws, transport, self.max_queue)

    def attach(self, client: Client, since: int | None, greeting: Frame | None = None) -> None:
        """Deliver to `client` what came after `since`, then live frames. Again
        (a `resume` message) replaces whatever was still waiting.

        Runs without awaiting, so no frame can slip between the history
        copied here and the live frames queued from now on."""
        client.queue.clear()
        client.history.clear()
        client.history_from_log = None
        client.greeting = greeting
        # Frames pending now are at or before `self.position`: in the history
        # below when the client wants them, before its greeting when not.
        client.skip = len(self.pending)
        if since is not None and since < self.position:
            complete = self._complete_after()
            if since < complete:
                client.history_from_log = (since, complete)
            client.history.extend(f for f in self.ring if f.position > max(since, complete))
        self.clients[client.client_id] = client
        self.wake(client)

    def _complete_after(self) -> int:
        """Every frame of every position after this one is in the ring."""
        if len(self.ring) < (self.ring.maxlen or 0):
            return self._first_position
        # Full: the oldest position may have lost some of its frames to the bound.
        return self.ring[0].position

    def detach(self, client: Client, reason: str) -> None:
        if self.clients.pop(client.client_id, None) is not None:
            self.disconnects[reason] += 1

    async def close(self, client: Client, code: int, reason: str) -> None:
        client.closing = True
        self.detach(client, reason)
        with contextlib.suppress(Exception):
            await client.ws.close(code=code, message=reason.encode())

    # ---- fan-out -------------------------------------------------------------

    def publish(self, recorded: RecordedEvent, notices: list[Notice]) -> None:
        """A read-model listener: frames for one applied event, sent at the next flush."""
        projections = self.models.projections
        frames = [event_frame(recorded), *(notice_frame(n, projections) for n in notices)]
        self.ring.extend(frames)
        self.position = recorded.position
        self.pending.extend(frames)
        head = self._head_frame(recorded)
        if head is not None:
            # Live only, never in the ring: nearly every probe of a chain's node moves its
            # head, so in the ring these frames would push out the ones a `?since=` resume
            # needs (and shrink how far back it reaches). A resume does not send them;
            # /api/chains has the heads.
            self.pending.append(head)
        self._schedule_flush()

    def _head_frame(self, recorded: RecordedEvent) -> Frame | None:
        """A `head_update` when this probe moved a chain node's head (or showed its first)."""
        probe = recorded.event
        if not isinstance(probe, ProbeRecorded) or not probe.observations:
            return None
        if "head" not in probe.observations:
            return None
        chain = self.models.projections.chains.chain_of(probe.provider)
        node = chain.nodes.get(probe.provider) if chain is not None else None
        if chain is None or node is None or node.head is None:
            self._heads.pop(probe.provider, None)
            return None
        previous = self._heads.get(probe.provider)
        if previous == node.head:
            return None
        self._heads[probe.provider] = node.head
        message = HeadUpdate(
            timestamp=iso_time(probe.started_at),
            provider=probe.provider,
            chain=chain.name,
            head=node.head,
            previous_head=previous,
            best_head=chain.best,
            lag=node.lag,
            position=recorded.position,
        )
        return Frame(recorded.position, "heads", probe.provider, encode(message))

    def broadcast(self, frame: Frame) -> None:
        """Send a frame to every client that wants it, at the next flush."""
        self.pending.append(frame)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            # Straight away when the last flush was long ago (low latency when
            # quiet), else when the interval is up (bounded writes when busy).
            delay = max(0.0, self._last_flush + self.flush_seconds - loop.time())
            self._flush_handle = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Deliver the pending frames: one shared write per fast-path client,
        the rest queued behind what already waits for the client."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._last_flush = asyncio.get_running_loop().time()
        frames, self.pending = self.pending, []
        if not frames:
            return  # (a client's skip counts pending frames: it is 0 when none were)
        # The joined wire bytes and frame count, per distinct topic set.
        joined: dict[frozenset[str], tuple[bytes, int]] = {}
        for client in list(self.clients.values()):
            skip, client.skip = client.skip, 0
            # (After a close frame, in either direction, no data frame may follow.)
            if client.closing or client.ws.closed or skip >= len(frames):
                continue
            if not client.on_fast_path():
                self._enqueue(client, frames[skip:])
                continue
            if skip:
                wire, count = _joined(frames[skip:], client)
            else:
                known = joined.get(client.topics)
                if known is None:
                    known = joined[client.topics] = _joined(frames, client)
                wire, count = known
            if count:
                client.transport.write(wire)
                client.sent += count
                self.messages_sent += count

    def _enqueue(self, client: Client, frames: list[Frame]) -> None:
        for frame in frames:
            if client.wants(frame) and not client.offer(frame):
                self.dropped += 1
                client.closing = True
                asyncio.get_running_loop().create_task(
                    self.close(client, TRY_AGAIN_LATER, "queue_overflow")
                )
                return
        self.wake(client)

    def send(self, client: Client, frame: Frame) -> None:
        """Send one frame to one client (a reply), behind what waits for it."""
        if client.offer(frame):
            self.wake(client)
        else:
            self.dropped += 1

    def wake(self, client: Client) -> None:
        """Start the client's sender unless it is running: something waits for it."""
        if not client.closing and (client.sender is None or client.sender.done()):
            client.sender = asyncio.get_running_loop().create_task(
                self.send_loop(client), name=f"ws-send:{client.client_id}"
            )

    async def stop_sending(self, client: Client) -> None:
        """The connection is over: stop its sender, if one is running."""
        client.closing = True
        sender, client.sender = client.sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender

    async def send_loop(self, client: Client) -> None:
        """Deliver to one client what the flush could not write straight away:
        greeting, history, then its queue, as many frames as are waiting in one write;
        return when nothing is left (the flush writes to it directly again)."""
        transport = client.transport
        while not client.closing and not client.ws.closed and not transport.is_closing():
            if transport.get_write_buffer_size() > HIGH_WATER:
                # The client is not reading: its (bounded) queue takes the wait.
                await _drained(transport)
                continue
            if client.history_from_log is not None and client.greeting is None:
                after, up_to = client.history_from_log
                client.history_from_log = None
                client.replaying = True
                try:
                    await self._send_from_log(client, transport, after, up_to)
                finally:
                    client.replaying = False
                continue
            batch = self._take(client)
            if batch:
                transport.write(b"".join(batch))
                client.sent += len(batch)
                self.messages_sent += len(batch)
                await asyncio.sleep(0)  # one client's backlog must not hold up the others
                continue
            return

    def _take(self, client: Client) -> list[bytes]:
        """The wire bytes of the next frames this client wants, up to BATCH_BYTES."""
        batch: list[bytes] = []
        size = 0
        if client.greeting is not None:
            batch.append(client.greeting.wire)
            size = len(client.greeting.wire)
            client.greeting = None
            if client.history_from_log is not None:
                return batch  # older history comes from the log before the ring's
        for source in (client.history, client.queue):
            while source and size < BATCH_BYTES:
                frame = source.popleft()
                if client.wants(frame):
                    batch.append(frame.wire)
                    size += len(frame.wire)
        return batch

    async def _send_from_log(
        self, client: Client, transport: asyncio.WriteTransport, after: int, up_to: int
    ) -> None:
        """Send the events after `after` up to `up_to` from the log, archive included
        (a page in memory at a time), then a `resync` naming any positions it could not."""
        position = after  # the last position read
        unsent: list[tuple[int, int]] = []
        page: list[RecordedEvent] = []
        try:
            async for row in iter_log_rows(self.store, after=after, to_position=up_to):
                if row.position > position + 1:  # positions are gap-free: these went missing
                    _note_unsent(unsent, position + 1, row.position - 1)
                position = row.position
                page.append(row.decode())
                if len(page) == HISTORY_PAGE:
                    self._write_history(client, transport, page)
                    page = []
                    await _drained(transport)
                    if client.closing or transport.is_closing():
                        return
        except Exception as exc:  # an unreadable segment or page: say what was not sent
            log.warning("live feed: resuming %s stopped at %d: %s", client.client_id, position, exc)
        if client.closing or transport.is_closing():
            return
        self._write_history(client, transport, page)
        if position < up_to:
            _note_unsent(unsent, position + 1, up_to)
        text = (
            "status and alert changes this old are not kept for replay; "
            "fetch /api/providers and /api/alerts for the current state"
        )
        if unsent:
            spans = ", ".join(f"{first}-{last}" for first, last in unsent)
            text = f"the log could not be read at positions {spans}: not sent; {text}"
        message = Resync(
            timestamp=iso_time(time.time()),
            from_position=after,
            to_position=up_to,
            message=text,
            unsent=unsent,
        )
        transport.write(Frame(0, CONTROL, None, encode(message)).wire)
        client.sent += 1
        self.messages_sent += 1

    def _write_history(
        self, client: Client, transport: asyncio.WriteTransport, page: list[RecordedEvent]
    ) -> None:
        wires = [
            frame.wire
            for recorded in page
            for frame in (event_frame(recorded), *map(notice_frame, log_entries(recorded)))
            if client.wants(frame)
        ]
        if wires:
            transport.write(b"".join(wires))
            client.sent += len(wires)
            self.messages_sent += len(wires)

    def send_error(self, client: Client, text: str) -> None:
        self.send(
            client, Frame(0, CONTROL, None, encode(ErrorMessage(timestamp=_now(), message=text)))
        )

    # ---- timers --------------------------------------------------------------

    def status_frame(self) -> Frame:
        projections = self.models.projections
        summary = projections.providers.summary()
        now = time.time()
        hour = projections.metrics.window(None, now - 3600, now)
        minute = projections.metrics.window(None, now - 60, now)
        open_alerts = len(projections.alerts.query(open_only=True))
        metrics = {
            "total_providers": summary.total,
            "online_count": summary.online,
            "degraded_count": summary.degraded,
            "offline_count": summary.offline,
            "rate_limited_count": summary.rate_limited,
            "maintenance_count": summary.maintenance,
            "unconfigured_count": summary.unconfigured,
            "unknown_count": summary.unknown,
            "paused_count": summary.paused,
            "avg_response_time_ms": hour.avg_latency_ms,
            "total_requests_hour": hour.count,
            "total_failures_hour": hour.failures,
            "probes_last_minute": minute.count,
            "failures_last_minute": minute.failures,
            "open_alerts": open_alerts,
            "event_position": projections.position,
            "system_health": summary.system_health,
        }
        lost = projections.alerts.lost_regions()
        regions = {
            region for provider in projections.providers.all() for region in provider.regions
        }
        message = StatusUpdate(
            timestamp=_now(),
            system_metrics=metrics,
            alert_count=open_alerts,
            active_websocket_clients=len(self.clients),
            position=projections.position,
            regions={
                region: "lost" if region in lost else "reporting"
                for region in sorted(regions.union(lost))
            },
        )
        return Frame(0, "status", None, encode(message))

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            if self.clients:
                self.broadcast(self.status_frame())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self.heartbeat()

    def heartbeat(self, now: Callable[[], float] = time.monotonic) -> None:
        """Ping everyone; close those silent for two intervals."""
        deadline = now() - 2 * self.heartbeat_interval
        for client in list(self.clients.values()):
            if client.last_seen < deadline:
                asyncio.get_running_loop().create_task(
                    self.close(client, WSCloseCode.GOING_AWAY, "heartbeat_timeout")
                )
        pinged = time.time()
        for client in self.clients.values():
            if not client.closing:
                client.last_ping = pinged
        self.broadcast(Frame(0, CONTROL, None, encode(Ping(timestamp=_now()))))


def _note_unsent(unsent: list[tuple[int, int]], first: int, last: int) -> None:
    """Add a range of positions not sent; past a few, the last range grows instead."""
    if len(unsent) < MAX_UNSENT_RANGES:
        unsent.append((first, last))
    else:
        unsent[-1] = (unsent[-1][0], last)


def _joined(frames: list[Frame], client: Client) -> tuple[bytes, int]:
    """The wire bytes of the frames this client wants, in one object, and their count."""
    wires = [frame.wire for frame in frames if client.wants(frame)]
    return b"".join(wires), len(wires)


async def _drained(transport: asyncio.WriteTransport) -> None:
    """Wait until a client's socket buffer is back under the high-water mark."""
    # Polling: the protocol's pause/resume signals belong to aiohttp.
    while transport.get_write_buffer_size() > HIGH_WATER and not transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(DRAIN_POLL_SECONDS)


def _now() -> str:
    return iso_time(time.time())
