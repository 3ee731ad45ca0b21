"""The event log on PostgreSQL beside SQLite, in one run on one machine.

    python benchmarks/bench_postgres.py [--events 100000] [--url postgresql://...]

Without --url it starts a throwaway PostgreSQL cluster (Debian's binaries, durable
settings: fsync and synchronous_commit on, as SQLite runs with synchronous=FULL).

1. append: 1,000 concurrent callers, one event per call, on each backend
2. replay: the whole log folded into every projection, on each backend
3. two instances (two processes) appending to one PostgreSQL log at once; the log is
   then checked gap-free and its chain verified
Prints events/s for each and the PostgreSQL / SQLite ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from cryptomon.events.audit import verify_chain
from cryptomon.events.log import EventLog, open_event_log
from cryptomon.projections import Projections, ProjectionSettings
from cryptomon.readmodels import fold_log

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_event_store import sample_event  # the same events as the SQLite benchmark
from pgcluster import PostgresCluster, find_binaries

CALLERS = 1000


async def append_concurrently(store: EventLog, count: int, callers: int, offset: int = 0) -> None:
    per_caller = count // callers

    async def caller(c: int) -> None:
        for i in range(per_caller):
            n = offset + c * per_caller + i
            await store.append(f"provider:provider-{n % 100}", [sample_event(n)])

    await asyncio.gather(*(caller(c) for c in range(callers)))


async def append_rate(target: str | Path, count: int) -> float:
    store = await open_event_log(target)
    try:
        started = time.perf_counter()
        await append_concurrently(store, count, CALLERS)
        return count / (time.perf_counter() - started)
    finally:
        await store.close()


async def replay_rate(target: str | Path) -> float:
    store = await open_event_log(target, readonly=True)
    try:
        projections = Projections(ProjectionSettings())
        started = time.perf_counter()
        folded = await fold_log(projections, store, store.head)
        return folded / (time.perf_counter() - started)
    finally:
        await store.close()


async def writer(url: str, count: int, offset: int) -> None:
    """One instance: wait for the parent's go, append, report the seconds it took."""
    store = await open_event_log(url)
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started = time.perf_counter()
        await append_concurrently(store, count, CALLERS // 2, offset)
        print(f"{time.perf_counter() - started:.3f}", flush=True)
    finally:
        await store.close()


async def two_instances(url: str, count: int) -> float:
    processes = []
    for i in range(2):
        command = [sys.executable, __file__, "--writer", url, "--events", str(count // 2),
                   "--offset", str(i * count)]  # fmt: skip
        processes.append(
            await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
        )
    for process in processes:
        assert process.stdout is not None
        assert (await process.stdout.readline()).strip() == b"ready"
    started = time.perf_counter()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        await process.stdin.drain()
    for process in processes:
        assert await process.wait() == 0
    return count / (time.perf_counter() - started)


async def check_log(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        positions = [r[0] for r in await conn.fetch("SELECT position FROM events ORDER BY 1")]
    finally:
        await conn.close()
    assert positions == list(range(1, len(positions) + 1)), "a gap in the positions"
    store = await open_event_log(url, readonly=True)
    try:
        report = await verify_chain(store)
    finally:
        await store.close()
    assert report.ok, report
    return f"{len(positions):,} positions gap-free, chain verified"


async def new_database(server: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, query = server.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def run(count: int, server: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Path(tmp) / "bench.db"
        postgres = await new_database(server)
        sqlite_append = await append_rate(sqlite, count)
        postgres_append = await append_rate(postgres, count)
        print(f"1. append, {CALLERS:,} concurrent callers, {count:,} events")
        print(f"   SQLite      {sqlite_append:>10,.0f} events/s")
        print(f"   PostgreSQL  {postgres_append:>10,.0f} events/s")
        print(f"   ratio PostgreSQL / SQLite: {postgres_append / sqlite_append:.2f}")
        sqlite_replay = await replay_rate(sqlite)
        postgres_replay = await replay_rate(postgres)
        print("2. replay into every projection")
        print(f"   SQLite      {sqlite_replay:>10,.0f} events/s")
        print(f"   PostgreSQL  {postgres_replay:>10,.0f} events/s")
        print(f"   ratio PostgreSQL / SQLite: {postgres_replay / sqlite_replay:.2f}")
        shared = await new_database(server)
        combined = await two_instances(shared, count)
        print(f"3. two instances appending to one PostgreSQL log, {count:,} events in all")
        print(f"   combined    {combined:>10,.0f} events/s")
        print(f"   ratio two instances / one: {combined / postgres_append:.2f}")
        print(f"   {await check_log(shared)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--url", help="a PostgreSQL server to create databases on")
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        asyncio.run(writer(args.writer, args.events, args.offset))
        return
    if args.url:
        asyncio.run(run(args.events, args.url))
        return
    binaries = find_binaries()
    if binaries is None:
        sys.exit("PostgreSQL is not installed; give --url or install Debian's postgresql")
    cluster = PostgresCluster(binaries, durable=True)
    try:
        cluster.start()
        asyncio.run(run(args.events, cluster.url()))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
