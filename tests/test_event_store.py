"""The event-store contract, run against every backend: SQLite files in tmp_path and a
fresh database on a throwaway PostgreSQL cluster. Backend-specific behaviour (SQLite's
one-writer lock and migrations, PostgreSQL's writers in several processes and its
notifications) is tested in each backend's subclass."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cryptomon.events.audit import export_jsonl, verify_chain
from cryptomon.events.log import (
    ConcurrencyError,
    DuplicateEventIdError,
    EventLog,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreWriteError,
    open_event_log,
)
from cryptomon.events.migrations import (
    SchemaError,
    load_migrations,
    migrations_dir,
    postgres_migrations_dir,
)
from cryptomon.events.postgres import PostgresEventStore
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import (
    AlertAcknowledged,
    EventDecodeError,
    EventMetadata,
    ProbeRecorded,
    RecordedEvent,
)


def probe(n: int, provider: str = "CoinGecko") -> ProbeRecorded:
    return ProbeRecorded(
        provider=provider,
        kind="health",
        endpoint="/ping",
        outcome="success",
        started_at=1_700_000_000.0 + n,
        latency_ms=float(n),
        http_status=200,
    )


class EventStoreContract:
    """What every event store does. A subclass supplies `target` (where a fresh log
    lives) and raw SQL access for the tests that tamper with stored rows."""

    @pytest.fixture
    def target(self) -> str | Path:
        raise NotImplementedError

    @pytest.fixture
    async def store(self, target: str | Path) -> AsyncIterator[EventLog]:
        opened = await open_event_log(target)
        yield opened
        await opened.close()

    async def execute_raw(self, target: str | Path, sql: str, *params: Any) -> None:
        """Run one statement outside cryptomon (qmark parameters)."""
        raise NotImplementedError

    async def query_raw(self, target: str | Path, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def test_append_returns_positions_and_reads_back(self, store: EventLog) -> None:
        metadata = EventMetadata(correlation_id="c1", causation_id="x", actor="alice")
        positions = await store.append("provider-a", [probe(1), probe(2)], metadata=metadata)
        assert positions == [1, 2]
        assert store.head == 2
        events = await store.read_all()
        assert [e.position for e in events] == [1, 2]
        assert [e.version for e in events] == [1, 2]
        assert events[0].event == probe(1)
        assert events[0].metadata == metadata
        assert events[0].type == "ProbeRecorded"

    async def test_expected_version_conflict_writes_nothing(self, store: EventLog) -> None:
        await store.append("s", [probe(1)], expected_version=0)
        with pytest.raises(ConcurrencyError) as caught:
            await store.append("s", [probe(2), probe(3)], expected_version=0)
        assert caught.value.actual == 1
        assert store.head == 1
        assert await store.append("s", [probe(2)], expected_version=1) == [2]

    async def test_one_conflict_does_not_fail_others_in_the_same_batch(
        self, store: EventLog
    ) -> None:
        await store.append("contended", [probe(0)])
        calls = [store.append(f"free-{i}", [probe(i)]) for i in range(50)]
        calls.append(store.append("contended", [probe(99)], expected_version=0))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[-1], ConcurrencyError)
        assert all(isinstance(r, list) for r in results[:-1])
        assert store.head == 51

    async def test_retried_append_is_idempotent(self, store: EventLog) -> None:
        ids = ["id-1", "id-2"]
        first = await store.append("s", [probe(1), probe(2)], event_ids=ids, expected_version=0)
        again = await store.append("s", [probe(1), probe(2)], event_ids=ids, expected_version=0)
        assert again == first
        assert store.head == 2
        with pytest.raises(DuplicateEventIdError):
            await store.append("s", [probe(1), probe(3)], event_ids=["id-1", "id-3"])
        assert store.head == 2

    async def test_a_caller_that_stops_waiting_fails_no_one_else(self, store: EventLog) -> None:
        await store.append("s", [probe(0)], event_ids=["stored"])
        # Queued together, so one group commit holds them; two callers then stop waiting
        # (cancelled, as at shutdown): one appending, one retrying an append already stored.
        leaving = [
            asyncio.ensure_future(store.append("a", [probe(1)])),
            asyncio.ensure_future(store.append("s", [probe(0)], event_ids=["stored"])),
        ]
        staying = asyncio.ensure_future(store.append("b", [probe(2)]))
        await asyncio.sleep(0)  # let all three reach the queue
        for call in leaving:
            call.cancel()
        assert await staying == [3]
        assert not store.last_write_failed
        assert await store.append("c", [probe(3)]) == [4]

    async def test_retry_racing_its_original_gets_the_same_positions(self, store: EventLog) -> None:
        ids = ["same-a", "same-b"]
        first, second = await asyncio.gather(
            store.append("s", [probe(1), probe(2)], event_ids=ids),
            store.append("s", [probe(1), probe(2)], event_ids=ids),
        )
        assert first == second == [1, 2]
        assert store.head == 2

    async def test_positions_are_gap_free_under_many_concurrent_appenders(
        self, store: EventLog
    ) -> None:
        async def appender(worker: int) -> list[int]:
            positions: list[int] = []
            for n in range(10):
                positions += await store.append(f"worker-{worker}", [probe(n), probe(n + 1)])
            return positions

        results = await asyncio.gather(*(appender(w) for w in range(150)))
        everything = sorted(p for positions in results for p in positions)
        assert everything == list(range(1, 150 * 20 + 1))
        stored = await store.read_all(limit=10_000)
        assert [e.position for e in stored] == everything
        for worker, positions in enumerate(results):
            assert positions == sorted(positions)
            versions = [e.version for e in stored if e.stream == f"worker-{worker}"]
            assert versions == list(range(1, 21))

    async def test_replay_pages_give_the_columns_of_the_events_pages_give(
        self, store: EventLog
    ) -> None:
        for n in range(25):
            await store.append(f"provider-{n % 3}", [probe(n)])
        events = [e async for page in store.pages(after=4, to_position=20) for e in page]
        columns = [c async for c in store.replay_pages(after=4, to_position=20, page_size=7)]
        assert [len(positions) for positions, _, _ in columns] == [7, 7, 2]
        assert [p for positions, _, _ in columns for p in positions] == [e.position for e in events]
        assert [t for _, times, _ in columns for t in times] == [e.recorded_at for e in events]
        assert [x for _, _, page in columns for x in page] == [e.event for e in events]

    async def test_read_by_type_and_time_uses_recorded_time(self, target: str | Path) -> None:
        now = [1000.0]
        store = await open_event_log(target, clock=lambda: now[0])
        try:
            for n in range(5):
                now[0] = 1000.0 + n * 10
                await store.append("p", [probe(n)])
                await store.append("alerts", [AlertAcknowledged(n, "bob", now[0])])
            found = await store.read_by_type(
                ["ProbeRecorded"], since=1010.0, until=1040.0, limit=10
            )
            assert [e.recorded_at for e in found] == [1030.0, 1020.0, 1010.0]
            oldest_first = await store.read_by_type(
                ["AlertAcknowledged"], limit=2, newest_first=False
            )
            assert [e.recorded_at for e in oldest_first] == [1000.0, 1010.0]
            assert [e.version for e in await store.read_stream("p", after_version=3)] == [4, 5]
            in_p = await store.read_by_type(["ProbeRecorded", "AlertAcknowledged"], stream="p")
            assert [e.stream for e in in_p] == ["p"] * 5
        finally:
            await store.close()

    async def test_recorded_time_never_goes_backwards(self, target: str | Path) -> None:
        times = iter([500.0, 400.0])
        store = await open_event_log(target, clock=lambda: next(times))
        try:
            await store.append("p", [probe(1)])
            await store.append("p", [probe(2)])
            assert [e.recorded_at for e in await store.read_all()] == [500.0, 500.0]
        finally:
            await store.close()

    async def test_subscription_catches_up_then_follows_live_appends(self, store: EventLog) -> None:
        for n in range(300):
            await store.append("early", [probe(n)])
        total = 300 + 40 * 25
        seen: list[RecordedEvent] = []

        async def follow() -> None:
            async for event in store.subscribe(after=0, page_size=64):
                seen.append(event)
                if len(seen) == total:
                    return

        follower = asyncio.create_task(follow())

        async def writer(w: int) -> None:
            for n in range(25):
                await store.append(f"live-{w}", [probe(n)])

        await asyncio.gather(*(writer(w) for w in range(40)))
        await asyncio.wait_for(follower, timeout=10)
        assert [e.position for e in seen] == list(range(1, total + 1))

    async def test_subscription_reads_from_the_database_when_behind_the_ring(
        self, target: str | Path
    ) -> None:
        store = await open_event_log(target, ring_capacity=10)
        try:
            for n in range(100):
                await store.append("p", [probe(n)])
            positions = []
            async for event in store.subscribe(after=5, page_size=7):
                positions.append(event.position)
                if event.position == 100:
                    break
            assert positions == list(range(6, 101))
        finally:
            await store.close()

    async def test_subscription_ends_when_store_closes(self, target: str | Path) -> None:
        store = await open_event_log(target)
        await store.append("p", [probe(1)])
        seen = []

        async def follow() -> None:
            async for event in store.subscribe():
                seen.append(event.position)

        follower = asyncio.create_task(follow())
        await store.append("p", [probe(2)])
        await store.close()
        await asyncio.wait_for(follower, timeout=5)
        assert seen == [1, 2]

    async def test_close_drains_pending_appends(self, target: str | Path) -> None:
        store = await open_event_log(target)
        pending = [asyncio.create_task(store.append("p", [probe(n)])) for n in range(500)]
        await asyncio.sleep(0)  # let every task enqueue its append before the close
        await store.close()
        assert sorted(p for task in pending for p in task.result()) == list(range(1, 501))
        with pytest.raises(StoreClosedError):
            await store.append("p", [probe(1)])
        reopened = await open_event_log(target)
        assert reopened.head == 500
        await reopened.close()

    async def test_unknown_type_and_malformed_payload_name_the_position(
        self, target: str | Path
    ) -> None:
        async with await open_event_log(target) as store:
            await store.append("p", [probe(1), probe(2), probe(3)])
        await self.execute_raw(target, "UPDATE events SET type = 'Nonsense' WHERE position = 2")
        await self.execute_raw(target, "UPDATE events SET payload = ? WHERE position = 3", b"{{")
        async with await open_event_log(target, readonly=True) as store:
            with pytest.raises(EventDecodeError, match=r"position 2 .*unknown event type"):
                await store.read_all(after=1, limit=1)
            with pytest.raises(EventDecodeError, match="position 3"):
                await store.read_all(after=2, limit=1)

    async def test_old_schema_version_is_upcast_on_read(self, target: str | Path) -> None:
        async with await open_event_log(target) as store:
            await store.append("p", [probe(1)])
        v1_payload = (
            b'{"type":"ProbeRecorded","provider":"Kraken","kind":"health",'
            b'"endpoint":"/0/public/Time","status":"timeout","started_at":5.0,'
            b'"response_time_ms":10000.0}'
        )
        await self.execute_raw(
            target, "UPDATE events SET payload = ?, schema_version = 1", v1_payload
        )
        async with await open_event_log(target, readonly=True) as store:
            [event] = await store.read_all()
        assert event.event == ProbeRecorded(
            provider="Kraken",
            kind="health",
            endpoint="/0/public/Time",
            outcome="timeout",
            started_at=5.0,
            latency_ms=10000.0,
        )
        assert (await self.query_raw(target, "SELECT payload FROM events"))[0][0] == v1_payload

    async def test_database_from_a_newer_cryptomon_is_refused(self, target: str | Path) -> None:
        async with await open_event_log(target):
            pass
        await self.execute_raw(
            target, "INSERT INTO schema_migrations VALUES (999, '0999_future', 0)"
        )
        with pytest.raises(SchemaError, match="schema version 999, newer than this cryptomon"):
            await open_event_log(target)
        with pytest.raises(SchemaError, match="newer"):
            await open_event_log(target, readonly=True)

    async def test_log_labels_merge_newest_first(self, target: str | Path) -> None:
        now = [100.0]
        store = await open_event_log(target, clock=lambda: now[0])
        try:
            for n in range(6):
                now[0] = 100.0 + n
                outcome = "success" if n % 2 else "failed"
                kind = "health" if n < 3 else "collection"
                await store.append("p", [ProbeRecorded("A", kind, "/", outcome, started_at=now[0])])
            failed = await store.read_by_label(["health:fail", "collection:fail"], limit=10)
            assert [e.position for e in failed] == [5, 3, 1]
            assert [e.position for e in await store.read_by_label(["health:ok"], since=101.5)] == []
            both = await store.read_by_label(["health:ok", "health:fail"], limit=2)
            assert [e.position for e in both] == [3, 2]
            await store.append("q", [ProbeRecorded("B", "health", "/", "failed", started_at=107)])
            only_p = await store.read_by_label(["health:fail"], limit=1, stream="p")
            assert [e.position for e in only_p] == [3]  # not 7, the newest, in "q"
            assert await store.read_by_label(["health:fail"], stream="nowhere") == []
        finally:
            await store.close()

    async def test_snapshots_round_trip_and_detect_corruption(
        self, store: EventLog, target: str | Path
    ) -> None:
        await store.append("p", [probe(1)])
        await store.save_snapshots({"providers": (1, b"state-a"), "alerts": (2, b"state-b")}, 1)
        snapshots = await store.load_snapshots()
        assert snapshots["alerts"].version == 2 and snapshots["alerts"].state == b"state-b"
        assert all(s.position == 1 and s.intact for s in snapshots.values())
        await self.execute_raw(
            target, "UPDATE snapshots SET state = ? WHERE name = 'providers'", b"\x00"
        )
        assert not (await store.load_snapshots())["providers"].intact

    async def test_verify_and_export_walk_the_hash_chain(
        self, store: EventLog, target: str | Path
    ) -> None:
        for n in range(5):
            await store.append(f"p-{n % 2}", [probe(n), probe(n + 10)])
        report = await verify_chain(store)
        assert report.ok and report.count == 10 and report.last_hash == store.last_hash
        out = io.BytesIO()
        assert await export_jsonl(store, out, from_position=3, to_position=6) == 4
        assert [int(m) for m in re.findall(rb'"position":(\d+)', out.getvalue())] == [3, 4, 5, 6]
        await self.execute_raw(target, "UPDATE events SET actor = 'mallory' WHERE position = 7")
        broken = await verify_chain(store)
        assert not broken.ok and broken.broken_at == 7 and broken.count == 6
        await self.execute_raw(target, "DELETE FROM events WHERE position >= 7")
        deleted = await verify_chain(store)
        assert not deleted.ok and deleted.reason is not None and "missing" in deleted.reason


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture
    def target(self, tmp_path: Path) -> str | Path:
        return tmp_path / "events.db"

    async def execute_raw(self, target: str | Path, sql: str, *params: Any) -> None:
        with sqlite3.connect(target) as conn:
            conn.execute(sql, params)

    async def query_raw(self, target: str | Path, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(target) as conn:
            return conn.execute(sql).fetchall()

    @pytest.fixture
    async def sqlite_store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        opened = await EventStore.open(tmp_path / "events.db")
        yield opened
        await opened.close()

    async def test_what_a_file_log_can_do(self, store: EventLog, target: str | Path) -> None:
        # Asked of the contract, never of the type: archiving and a second process
        # read the file, one writer at a time, and the outbox works on its connection.
        assert store.path == target
        assert store.single_writer and store.supports_exclusive

        async def count(conn: Any) -> int:
            async with conn.execute("SELECT COUNT(*) FROM events") as cursor:
                return int((await cursor.fetchone())[0])

        await store.append("p", [probe(1)])
        assert await store.exclusive(count) == 1

    async def test_second_writer_is_refused(self, sqlite_store: EventStore) -> None:
        with pytest.raises(StoreLockedError, match="in use by another cryptomon process"):
            await EventStore.open(sqlite_store.path)
        reader = await EventStore.open(sqlite_store.path, readonly=True)
        await reader.close()

    async def test_write_failure_is_a_clear_error_and_the_writer_recovers(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "t.db"
        store = await EventStore.open(path, busy_timeout_ms=50)
        try:
            await store.append("p", [probe(1)])
            blocker = sqlite3.connect(path, timeout=0)
            blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
            with pytest.raises(StoreWriteError, match="locked"):
                await store.append("p", [probe(2)])
            assert store.failed_appends == 1
            blocker.rollback()
            blocker.close()
            assert await store.append("p", [probe(3)]) == [2]
        finally:
            await store.close()

    async def test_migrations_on_empty_and_existing_databases(self, tmp_path: Path) -> None:
        path = tmp_path / "t.db"
        async with await EventStore.open(path) as store:
            await store.append("p", [probe(1)])
        async with await EventStore.open(path) as store:  # already migrated: nothing re-applied
            assert store.head == 1
        with sqlite3.connect(path) as conn:
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert versions == [(1,), (2,), (3,)]

    async def test_a_version_1_database_with_events_is_migrated_in_place(
        self, tmp_path: Path
    ) -> None:
        current = tmp_path / "current.db"
        async with await EventStore.open(current) as store:
            failed = ProbeRecorded("Kraken", "health", "/", "timeout", started_at=1.0)
            await store.append("p", [probe(1), failed])
        old = tmp_path / "old.db"
        columns = (
            "position, event_id, stream, version, type, schema_version, recorded_at, payload,"
            " correlation_id, causation_id, actor, hash"
        )
        with sqlite3.connect(old) as conn:
            conn.executescript((migrations_dir() / "0001_event_log.sql").read_text())
            conn.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name, applied_at)"
            )
            conn.execute("INSERT INTO schema_migrations VALUES (1, '0001_event_log', 0)")
            conn.execute(f"ATTACH DATABASE '{current}' AS current")
            conn.execute(f"INSERT INTO events ({columns}) SELECT {columns} FROM current.events")
        async with await EventStore.open(old) as store:
            failures = await store.read_by_label(["health:fail"])
            assert [e.event for e in failures] == [failed]
            assert [e.position for e in await store.read_by_label(["health:ok"])] == [1]

    async def test_a_caller_that_stops_waiting_for_exclusive_work_leaves_the_writer_running(
        self, sqlite_store: EventStore
    ) -> None:
        store = sqlite_store
        started, release = asyncio.Event(), asyncio.Event()

        async def work(conn: object) -> int:
            started.set()
            await release.wait()
            return 1

        caller = asyncio.create_task(store.exclusive(work))
        await started.wait()
        caller.cancel()  # as a shutdown cancels a task waiting for a snapshot
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        [position] = await asyncio.wait_for(store.append("s", [probe(1)]), 5)
        assert position == store.head


# A writer process for the multi-process test: appends `count` batches of one event to
# each of five streams of its own, then prints the positions it was given.
_WRITER = """
import asyncio, sys
from cryptomon.events.postgres import PostgresEventStore
from cryptomon.events.types import ProbeRecorded

async def main(url: str, worker: int, count: int) -> None:
    store = await PostgresEventStore.open(url)
    mine = []
    for n in range(count):
        calls = [
            store.append(f"w{worker}-{s}", [ProbeRecorded("P", "health", "/", "success", float(n))])
            for s in range(5)
        ]
        for positions in await asyncio.gather(*calls):
            mine += positions
    await store.close()
    print(" ".join(map(str, mine)))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    def target(self, postgres_url: str) -> str | Path:
        return postgres_url

    @staticmethod
    def _numbered(sql: str) -> str:
        count = iter(range(1, sql.count("?") + 1))
        return re.sub(r"\?", lambda _: f"${next(count)}", sql)

    async def execute_raw(self, target: str | Path, sql: str, *params: Any) -> None:
        conn = await asyncpg.connect(str(target))
        try:
            await conn.execute(self._numbered(sql), *params)
        finally:
            await conn.close()

    async def query_raw(self, target: str | Path, sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(str(target))
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def test_what_a_server_log_cannot_do(self, store: EventLog) -> None:
        # No file to hand a second process or archive beside (no archive unless given
        # one), other instances append, and no SQLite connection to run work on.
        assert store.path is None and store.archive is None
        assert not store.single_writer and not store.supports_exclusive

        async def work(conn: Any) -> None:
            raise AssertionError("never run")

        with pytest.raises(StoreError, match="runs no work"):
            await store.exclusive(work)

    async def test_snapshot_rows_are_kept_per_instance(self, target: str | Path) -> None:
        # Two instances saving never overwrite each other's; one with none of its own
        # starts from the instance whose snapshot covers the most of the log.
        a = await open_event_log(target, snapshot_owner="host-a")
        b = await open_event_log(target, snapshot_owner="host-b")
        try:
            await a.append("p", [probe(1), probe(2)])
            await a.save_snapshots({"providers": (1, b"a-state")}, 2)
            await b.save_snapshots({"providers": (1, b"b-state")}, 1)
            assert (await a.load_snapshots())["providers"].state == b"a-state"
            assert (await b.load_snapshots())["providers"].state == b"b-state"
            fresh = await open_event_log(target, snapshot_owner="host-c", readonly=True)
            try:
                taken = (await fresh.load_snapshots())["providers"]
            finally:
                await fresh.close()
            assert (taken.state, taken.position) == (b"a-state", 2)
            rows = await self.query_raw(target, "SELECT instance FROM snapshots ORDER BY 1")
            assert rows == [("host-a",), ("host-b",)]
        finally:
            await a.close()
            await b.close()

    async def test_an_append_postgresql_refuses_fails_alone(self, store: EventLog) -> None:
        # A text column cannot hold a NUL: that one append fails, not its batch-mates.
        results = await asyncio.gather(
            store.append("ok-1", [probe(1)]),
            store.append("bad", [probe(2)], metadata=EventMetadata(actor="a\x00b")),
            store.append("ok-2", [probe(3)]),
            return_exceptions=True,
        )
        assert results[0] == [1]
        assert isinstance(results[1], StoreWriteError)
        assert results[2] == [2]
        assert store.head == 2
        assert not store.last_write_failed

    async def test_migrations_apply_once(self, postgres_url: str) -> None:
        async with await PostgresEventStore.open(postgres_url) as store:
            await store.append("p", [probe(1)])
        async with await PostgresEventStore.open(postgres_url) as store:
            assert store.head == 1
        versions = await self.query_raw(
            postgres_url, "SELECT version FROM schema_migrations ORDER BY version"
        )
        assert versions == [(m.version,) for m in load_migrations(postgres_migrations_dir())]

    async def test_two_stores_on_one_database_share_one_gap_free_log(
        self, postgres_url: str
    ) -> None:
        first = await PostgresEventStore.open(postgres_url)
        second = await PostgresEventStore.open(postgres_url, poll_interval=30)
        try:
            seen: list[int] = []

            async def follow() -> None:
                async for event in second.subscribe():
                    seen.append(event.position)
                    if len(seen) == 200:
                        return

            follower = asyncio.create_task(follow())
            await asyncio.gather(
                *(first.append(f"s-{n}", [probe(n)]) for n in range(100)),
                *(second.append(f"t-{n}", [probe(n)]) for n in range(100)),
            )
            # Notifications (the poll is 30s away) bring the other store's events.
            await asyncio.wait_for(follower, timeout=10)
            assert seen == list(range(1, 201))
            assert (await verify_chain(second)).ok
            with pytest.raises(ConcurrencyError):
                await second.append("s-1", [probe(1)], expected_version=0)
        finally:
            await first.close()
            await second.close()

    async def test_a_lost_notification_delays_but_never_loses_an_event(
        self, postgres_url: str
    ) -> None:
        writer = await PostgresEventStore.open(postgres_url)
        follower_store = await PostgresEventStore.open(postgres_url, poll_interval=0.05)
        admin = await asyncpg.connect(postgres_url)
        try:
            # Cut every listening connection: their notifications are gone.
            killed = await admin.fetchval(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
            assert killed == 2
            await writer.append("p", [probe(1)])

            async def first_event() -> RecordedEvent:
                async for event in follower_store.subscribe():
                    return event
                raise AssertionError("the subscription ended")

            event = await asyncio.wait_for(first_event(), timeout=10)
            assert event.position == 1
        finally:
            await admin.close()
            await writer.close()
            await follower_store.close()

    async def test_writers_in_several_processes_never_show_a_reader_a_gap(
        self, postgres_url: str
    ) -> None:
        async with await PostgresEventStore.open(postgres_url):
            pass  # migrated before the writers race to start
        workers, batches = 4, 60
        total = workers * batches * 5
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _WRITER,
                postgres_url,
                str(w),
                str(batches),
                stdout=subprocess.PIPE,
            )
            for w in range(workers)
        ]
        reader = await PostgresEventStore.open(postgres_url, readonly=True)
        try:
            last = 0
            reads = 0
            while last < total:
                page = await reader.read_all(after=last, limit=1000)
                # A reader sees committed positions only, and they never skip: N+1 is
                # never visible before N.
                assert [e.position for e in page] == list(range(last + 1, last + 1 + len(page)))
                if page:
                    last = page[-1].position
                reads += 1
                if not page and any(p.returncode not in (None, 0) for p in processes):
                    pytest.fail("a writer process failed")
            outputs = [await p.communicate() for p in processes]
            assert [p.returncode for p in processes] == [0] * workers
            claimed = sorted(int(x) for out, _ in outputs for x in out.split())
            assert claimed == list(range(1, total + 1))
            assert reads > workers  # the reader really read while they wrote
            report = await verify_chain(reader)
            assert report.ok and report.count == total
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await reader.close()

    async def test_the_password_never_appears_in_errors_or_locations(
        self, postgres_url: str
    ) -> None:
        store = await PostgresEventStore.open(postgres_url)
        try:
            assert "pg-secret" not in store.location and ":***@" in store.location
            assert "pg-secret" not in repr(store)
        finally:
            await store.close()
        missing = postgres_url.replace("/test_", "/absent_")
        with pytest.raises(Exception) as caught:
            await PostgresEventStore.open(missing)
        assert "pg-secret" not in str(caught.value)
        assert "does not exist" in str(caught.value)
