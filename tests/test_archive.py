"""Retention: probe events archived into segments, the chain verified across both."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from cryptomon.events.archive import archive_dir, archive_probe_events, segments
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import AlertAcknowledged, ProbeRecorded


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptomon", *args], capture_output=True, text=True, timeout=60
    )


async def build_log(path: Path, count: int) -> EventStore:
    now = [1000.0]
    store = await EventStore.open(path, clock=lambda: now[0])
    for n in range(count):
        now[0] = 1000.0 + n
        if n % 10 == 5:
            await store.append("acks", [AlertAcknowledged(n, "alice", now[0])])
        else:
            await store.append("p", [ProbeRecorded("A", "health", "/", "success", started_at=n)])
    return store


def row_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return count


async def test_archived_events_leave_the_database_and_the_chain_still_verifies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    store = await build_log(path, 60)
    moved = await archive_probe_events(store, before=1030.0, up_to_position=store.head)
    assert moved == 27  # positions 1..30 less the three acknowledgements
    assert row_count(path) == 33
    await store.close()
    [(first, last, _segment)] = segments(path)
    assert (first, last) == (1, 30)

    result = cli("verify", "--db", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: 60 events")
    exported = cli("export", "--db", str(path))
    positions = [json.loads(line)["position"] for line in exported.stdout.splitlines()]
    assert positions == list(range(1, 61))


async def test_a_second_run_archives_only_what_is_new(tmp_path: Path) -> None:
    store = await build_log(tmp_path / "log.db", 60)
    await archive_probe_events(store, before=1020.0, up_to_position=store.head)
    assert await archive_probe_events(store, before=1020.0, up_to_position=store.head) == 0
    assert await archive_probe_events(store, before=1040.0, up_to_position=25) == 5
    await store.close()
    assert [(f, last) for f, last, _ in segments(store.path)] == [(1, 20), (21, 25)]
    assert cli("verify", "--db", str(store.path)).returncode == 0


async def test_a_backlog_is_archived_in_one_run_a_segment_at_a_time(tmp_path: Path) -> None:
    store = await build_log(tmp_path / "log.db", 60)
    moved = await archive_probe_events(
        store, before=1050.0, up_to_position=store.head, segment_events=20
    )
    assert moved == 45  # positions 1..50 less five acknowledgements
    assert row_count(store.path) == 15
    await store.close()
    # 20 probe events a segment; the acknowledgements at 6, 16, 26... stay in the database.
    assert [(f, last) for f, last, _ in segments(store.path)] == [(1, 22), (23, 44), (45, 50)]
    assert cli("verify", "--db", str(store.path)).returncode == 0


async def test_only_what_snapshots_cover_is_archived(tmp_path: Path) -> None:
    store = await build_log(tmp_path / "log.db", 40)
    assert await archive_probe_events(store, before=2000.0, up_to_position=10) == 9
    await store.close()


async def test_an_edited_segment_breaks_the_chain_at_that_position(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = await build_log(path, 40)
    await archive_probe_events(store, before=1030.0, up_to_position=store.head)
    await store.close()
    [(_f, _l, segment)] = segments(path)
    lines = gzip.decompress(segment.read_bytes()).splitlines()
    edited = json.loads(lines[6])
    edited["payload"]["outcome"] = "failed"
    lines[6] = json.dumps(edited).encode()
    segment.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    result = cli("verify", "--db", str(path))
    assert result.returncode == 1
    assert result.stdout.startswith(f"BROKEN at position {edited['position']}:")


async def test_a_crash_between_segment_and_delete_leaves_no_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = await build_log(path, 30)
    await archive_probe_events(store, before=1020.0, up_to_position=store.head)
    await store.close()
    # Put the archived rows back, as if the delete had never committed.
    [(_f, _l, segment)] = segments(path)
    columns = (
        "position, event_id, stream, version, type, schema_version, recorded_at,"
        " correlation_id, causation_id, actor, hash, payload"
    )
    with sqlite3.connect(path) as conn:
        for line in gzip.decompress(segment.read_bytes()).splitlines():
            event = json.loads(line)
            event["payload"] = json.dumps(event["payload"], separators=(",", ":")).encode()
            conn.execute(
                f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * 12)})",
                [event[c.strip()] for c in columns.split(",")],
            )
    assert row_count(path) == 30
    result = cli("verify", "--db", str(path))
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("OK: 30 events")
    exported = cli("export", "--db", str(path)).stdout.splitlines()
    assert [json.loads(x)["position"] for x in exported] == list(range(1, 31))


async def test_the_database_stops_growing_when_old_events_are_archived(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    now = [0.0]
    store = await EventStore.open(path, clock=lambda: now[0])
    sizes = []
    padding = "x" * 400
    for cycle in range(6):
        for batch in range(40):
            now[0] = cycle * 1000 + batch * 25
            event = ProbeRecorded("A", "health", padding, "success", started_at=now[0])
            await store.append("p", [event] * 50)
        await archive_probe_events(store, before=now[0] - 100, up_to_position=store.head)
        sizes.append(path.stat().st_size)
    await store.close()
    assert archive_dir(path).is_dir()
    assert sizes[-1] <= sizes[1] * 1.2, sizes
