"""What both event-log backends share, whatever database holds the log: group-commit
planning (`plan_batch`), and the queued front (`QueuedLog`): appends waiting for the
writer task's next commit, a ring of recent commits, and subscriptions that follow the
head. A backend (`store`, `postgres`) supplies the database."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptomon.events.chain import chain_hash
from cryptomon.events.log import (
    NO_METADATA,
    ConcurrencyError,
    DuplicateEventIdError,
    StoreClosedError,
    StoreError,
)
from cryptomon.events.types import (
    SCHEMA_VERSIONS,
    Event,
    EventMetadata,
    RecordedEvent,
    encode_event,
    event_label,
)


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


class QueuedLog:
    """What both event stores do in this process, whatever database holds the log:
    appends wait in a queue for the writer task's next group commit, recent commits
    stay in a ring (a subscriber that keeps up never reads the database), and
    subscriptions follow the head. A store supplies the queue, the writer and reads."""

    def __init__(self, ring_capacity: int) -> None:
        self._ring_capacity = ring_capacity
        self._ring: deque[list[RecordedEvent]] = deque()
        self._ring_size = 0
        self._commit_signal = asyncio.Event()
        self._head = 0
        self._closing = False
        self._closed = False
        self._writer_task: asyncio.Task[None] | None = None

    @property
    def location(self) -> str:
        raise NotImplementedError

    def _enqueue(self, request: Append) -> None:
        raise NotImplementedError

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        raise NotImplementedError

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
        self._enqueue(
            Append(stream, events, event_ids, expected_version, metadata or NO_METADATA, future)
        )
        return await future

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
