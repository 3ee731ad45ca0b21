"""Event-store throughput on a file database, against raw sqlite3 in the same run.

    python benchmarks/bench_event_store.py [--events 200000]

1. ceiling: raw sqlite3 executemany of the same rows, batches of 1,000
2. append: 1,000 concurrent callers, one event per call
3. append: one caller awaiting each append (latency p50 / p99)
4. reading the whole log back through a subscription
Prints events/s for each and the ratio of (2) to (1).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from cryptomon.events.chain import GENESIS_HASH, chain_hash
from cryptomon.events.migrations import load_migrations
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import SCHEMA_VERSIONS, ProbeRecorded, encode_event, event_label


def sample_event(n: int) -> ProbeRecorded:
    return ProbeRecorded(
        provider=f"provider-{n % 100}",
        kind="health",
        endpoint="/ping",
        outcome="success" if n % 10 else "timeout",
        started_at=1_790_000_000.0 + n,
        latency_ms=120.5 + n % 50,
        http_status=200,
        response_bytes=512,
    )


def raw_ceiling(path: Path, count: int) -> float:
    """Insert the rows our store would write, prepared up front, with plain sqlite3."""
    rows = []
    previous = GENESIS_HASH
    versions: dict[str, int] = {}
    for n in range(count):
        event = sample_event(n)
        stream = f"provider-{n % 100}"
        version = versions.get(stream, 0) + 1
        versions[stream] = version
        payload = encode_event(event)
        event_id = str(uuid.uuid4())
        digest = chain_hash(
            previous, event_id, stream, version, "ProbeRecorded", 2, 1.0, None, None, None, payload
        )
        rows.append(
            (n + 1, event_id, stream, version, "ProbeRecorded", SCHEMA_VERSIONS["ProbeRecorded"],
             1.0, payload, None, None, None, digest, event_label(event))
        )  # fmt: skip
        previous = digest
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for migration in load_migrations():  # the same schema and indexes as the store's
        conn.executescript(migration.sql)
    started = time.perf_counter()
    for start in range(0, count, 1000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (position, event_id, stream, version, type, schema_version,"
            " recorded_at, payload, correlation_id, causation_id, actor, hash, label)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows[start : start + 1000],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


async def concurrent_appends(path: Path, count: int, callers: int) -> float:
    store = await EventStore.open(path)
    per_caller = count // callers

    async def caller(c: int) -> None:
        for i in range(per_caller):
            n = c * per_caller + i
            await store.append(f"provider-{n % 100}", [sample_event(n)])

    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    elapsed = time.perf_counter() - started
    await store.close()
    return per_caller * callers / elapsed


async def sequential_appends(path: Path, count: int) -> tuple[float, float, float]:
    store = await EventStore.open(path)
    latencies = []
    started = time.perf_counter()
    for n in range(count):
        t0 = time.perf_counter()
        await store.append("single", [sample_event(n)])
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    await store.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return count / elapsed, quantiles[49] * 1000, quantiles[98] * 1000


async def subscription_read(path: Path) -> tuple[int, float]:
    store = await EventStore.open(path, readonly=True)
    head = store.head
    seen = 0
    started = time.perf_counter()
    async for event in store.subscribe(after=0):
        seen += 1
        if event.position == head:
            break
    elapsed = time.perf_counter() - started
    await store.close()
    return seen, seen / elapsed


async def run(events: int, sequential: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ceiling = raw_ceiling(directory / "raw.db", events)
        print(f"1. raw sqlite3 executemany, batches of 1,000:  {ceiling:>10,.0f} events/s")
        concurrent = await concurrent_appends(directory / "store.db", events, 1000)
        print(f"2. append, 1,000 concurrent callers:          {concurrent:>10,.0f} events/s")
        rate, p50, p99 = await sequential_appends(directory / "seq.db", sequential)
        print(
            f"3. append, one caller in turn:                {rate:>10,.0f} events/s"
            f"  (latency p50 {p50:.2f} ms, p99 {p99:.2f} ms)"
        )
        seen, read_rate = await subscription_read(directory / "store.db")
        print(f"4. subscription read of {seen:,} events:      {read_rate:>10,.0f} events/s")
        print(f"ratio (2)/(1): {concurrent / ceiling:.2f}  (goal >= 0.5)")
        print(f"(4) goal >= 200,000 events/s: {'met' if read_rate >= 200_000 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sequential", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.sequential))


if __name__ == "__main__":
    main()
