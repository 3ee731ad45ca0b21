"""Archiving a log on PostgreSQL: segments in `storage.archive_dir`, one instance at a time.

Against the throwaway cluster (`postgres_url`): the chain verifies across the configured
directory and the database, the archive lock keeps a second archiver out, a reader walking
the log while another instance archives misses nothing, and two real services on one log
(`python -m cryptomon serve`) archive it once between them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from standins import StandIn
from test_service import free_port, wait_listening

from cryptomon.config import ConfigError, load_config
from cryptomon.events.archive import (
    ArchiveBusyError,
    archive_probe_events,
    iter_log_rows,
    segments_in,
)
from cryptomon.events.audit import verify_chain
from cryptomon.events.postgres import ARCHIVE_LOCK, PostgresEventStore
from cryptomon.events.types import AlertAcknowledged, ProbeRecorded
from cryptomon.http.settings import Settings

DEADLINE_S = 60.0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptomon", *args], capture_output=True, text=True, timeout=120
    )


async def build_log(url: str, archive: Path, count: int) -> PostgresEventStore:
    """`count` events a second apart from t=1000: probes, and an acknowledgement at every
    position 6, 16, 26... (which archiving leaves in the database)."""
    now = [1000.0]
    store = await PostgresEventStore.open(url, archive=archive, clock=lambda: now[0])
    for n in range(count):
        now[0] = 1000.0 + n
        if n % 10 == 5:
            await store.append("acks", [AlertAcknowledged(n, "alice", now[0])])
        else:
            await store.append("p", [ProbeRecorded("A", "health", "/", "success", started_at=n)])
    return store


async def database_positions(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [row[0] for row in await conn.fetch("SELECT position FROM events ORDER BY 1")]
    finally:
        await conn.close()


def serve(config: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """A real service on `config`, its log lines in `log`, listening: (process, base URL)."""
    port = free_port()
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
             "--port", str(port)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
        )  # fmt: skip
    try:
        wait_listening(process)
    except AssertionError:
        process.kill()
        process.wait()
        raise
    return process, f"http://127.0.0.1:{port}"


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def write_config(path: Path, url: str, archive: Path, extra: str = "") -> Path:
    path.write_text(f'[storage]\nurl = "{url}"\narchive_dir = "{archive}"\n{extra}')
    return path


async def test_segments_go_to_the_configured_directory_and_the_chain_verifies_across_both(
    tmp_path: Path, postgres_url: str
) -> None:
    archive = tmp_path / "shared" / "archive"
    store = await build_log(postgres_url, archive, 60)
    try:
        moved = await archive_probe_events(store, before=1030.0, up_to_position=store.head)
        assert moved == 27  # positions 1..30 less the acknowledgements at 6, 16 and 26
        assert [(first, last) for first, last, _ in segments_in(archive)] == [(1, 30)]
        assert await database_positions(postgres_url) == [6, 16, 26, *range(31, 61)]
        report = await verify_chain(store)
        assert (report.ok, report.count, report.last_position) == (True, 60, 60)
    finally:
        await store.close()
    assert names(tmp_path) == ["shared"]  # nothing anywhere else

    config = write_config(tmp_path / "pg.toml", postgres_url, archive)
    result = cli("verify", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: 60 events")
    exported = cli("export", "--config", str(config))
    assert [json.loads(line)["position"] for line in exported.stdout.splitlines()] == list(
        range(1, 61)
    )
    replayed = cli("replay", "--config", str(config))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    # Without the directory the database alone is no whole chain; --archive-dir gives it.
    alone = cli("verify", "--db", postgres_url)
    assert alone.returncode == 1
    assert alone.stdout.startswith("BROKEN at position 1: positions 1..5 are missing")
    flagged = cli("verify", "--db", postgres_url, "--archive-dir", str(archive))
    assert flagged.returncode == 0, flagged.stdout + flagged.stderr


async def test_while_one_instance_archives_another_is_turned_away(
    tmp_path: Path, postgres_url: str
) -> None:
    archive = tmp_path / "archive"
    first = await build_log(postgres_url, archive, 40)
    second = await PostgresEventStore.open(postgres_url, archive=archive)
    try:
        async with first.archiving() as ours:
            assert ours
            async with second.archiving() as theirs:
                assert not theirs
            with pytest.raises(ArchiveBusyError, match="another instance is archiving"):
                await archive_probe_events(second, before=2000.0, up_to_position=second.head)
        assert segments_in(archive) == []
        # Released with the block (its connection closed): the second archives now.
        assert await archive_probe_events(second, before=2000.0, up_to_position=39) > 0
        assert await archive_probe_events(first, before=2000.0, up_to_position=39) == 0
        assert [(f, last) for f, last, _ in segments_in(archive)] == [(1, 39)]
        assert (await verify_chain(first)).ok
    finally:
        await second.close()
        await first.close()


async def test_a_walk_while_another_instance_archives_misses_no_position(
    tmp_path: Path, postgres_url: str
) -> None:
    """The reader lists the segments (none yet) and reads its first page of the database;
    then the other instance writes a segment and deletes its rows. The reader's next page
    starts after a gap, which the segment written since fills."""
    archive = tmp_path / "archive"
    count = 12_000  # more than one page (5,000 rows) of the database
    writer = await PostgresEventStore.open(postgres_url, archive=archive, clock=lambda: 1000.0)
    reader = await PostgresEventStore.open(postgres_url, archive=archive, readonly=True)
    try:
        probe = ProbeRecorded("A", "health", "/", "success", started_at=1.0)
        for _ in range(count // 1000):
            await writer.append("p", [probe] * 1000)
        rows = iter_log_rows(reader)
        seen = [(await anext(rows)).position]
        moved = await archive_probe_events(writer, before=2000.0, up_to_position=writer.head)
        assert moved == count - 1  # the newest row stays in the database
        seen += [row.position async for row in rows]
        assert seen == list(range(1, count + 1))
        report = await verify_chain(reader)
        assert (report.ok, report.count) == (True, count)
    finally:
        await reader.close()
        await writer.close()


def test_archive_dir_rules(tmp_path: Path) -> None:
    url = "postgresql://u@db/log"
    path = tmp_path / "storage.toml"
    path.write_text(f'[storage]\nurl = "{url}"\narchive_after = "30d"\n')
    with pytest.raises(ConfigError, match=r"storage\.archive_dir: archive_after on PostgreSQL"):
        load_config(path)
    path.write_text('[storage]\narchive_dir = "data/archive"\n')
    with pytest.raises(ConfigError, match=r"storage\.archive_dir: 'data/archive' is relative"):
        load_config(path)
    # Without archive_after the directory is only read (verify, replay): nothing is checked.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path.write_text(f'[storage]\nurl = "{url}"\narchive_dir = "{blocker / "archive"}"\n')
    Settings.from_config(load_config(path))
    # Archiving: the directory must be one this process can write, found at start.
    for target, problem in ((blocker, "is not a directory"), (blocker / "x", "Not a directory")):
        path.write_text(
            f'[storage]\nurl = "{url}"\narchive_after = "30d"\narchive_dir = "{target}"\n'
        )
        with pytest.raises(ConfigError, match=rf"storage\.archive_dir: .*{problem}"):
            Settings.from_config(load_config(path))
    # --db naming a PostgreSQL log the file did not: the same rule as the file's url.
    path.write_text('[storage]\narchive_after = "30d"\n')
    with pytest.raises(ConfigError, match=r"storage\.archive_dir: archive_after on PostgreSQL"):
        Settings.from_config(load_config(path), database=url)
    created = tmp_path / "new" / "archive"
    path.write_text(f'[storage]\nurl = "{url}"\narchive_after = "30d"\narchive_dir = "{created}"\n')
    Settings.from_config(load_config(path))
    assert created.is_dir()


async def test_two_instances_archive_the_log_once_into_the_shared_directory(
    tmp_path: Path, standin: StandIn, postgres_url: str
) -> None:
    archive = tmp_path / "archive"
    providers = "".join(
        f'[[providers]]\nname = "P{n}"\ncategory = "market_data"\n'
        f'base_url = "{standin.url("")}"\nhealth_path = "/healthy"\ninterval = "1h"\n'
        for n in range(4)
    )
    # Everything recorded a millisecond before the job runs is old enough to archive.
    config = write_config(
        tmp_path / "shared.toml", postgres_url, archive, 'archive_after = "1ms"\n' + providers
    )
    env = {k: v for k, v in os.environ.items() if k != "CRYPTOMON_API_TOKEN"}
    processes: list[subprocess.Popen[str]] = []
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    try:
        urls = []
        for log in logs:
            process, url = serve(config, log, env)
            processes.append(process)
            urls.append(url)

        async with aiohttp.ClientSession() as session:

            async def post(url: str, path: str) -> dict[str, object]:
                async with session.post(url + path) as response:
                    assert response.status == 200, await response.text()
                    body: dict[str, object] = await response.json()
                    return body

            for url in urls * 3:
                await post(url, "/api/scheduler/trigger/health_checks")

            async def cleanup_on_both() -> None:
                await asyncio.gather(
                    *(post(url, "/api/scheduler/trigger/database_cleanup") for url in urls)
                )

            # While someone else holds the archive lock, neither instance archives.
            holder = await asyncpg.connect(postgres_url)
            try:
                await holder.execute("SELECT pg_advisory_lock($1, $2)", *ARCHIVE_LOCK)
                await cleanup_on_both()
            finally:
                await holder.close()
            assert segments_in(archive) == []
            for log in logs:
                assert "another instance is archiving the log; skipped" in log.read_text()

            # Both run the job at once: one archives, the other is turned away or finds
            # nothing left.
            await cleanup_on_both()
            archived = [
                line
                for log in logs
                for line in log.read_text().splitlines()
                if "archived" in line and "archived 0 " not in line
            ]
            assert len(archived) == 1, archived
            assert str(archive) in archived[0]
            spans = [(first, last) for first, last, _ in segments_in(archive)]
            assert spans, "nothing was archived"
            in_segments = {
                row["position"]
                for _, _, segment in segments_in(archive)
                for row in map(json.loads, gzip.decompress(segment.read_bytes()).splitlines())
            }
            in_database = set(await database_positions(postgres_url))
            assert not in_segments & in_database
            head = max(in_database)
            assert in_segments | in_database == set(range(1, head + 1))

            # Each instance's fresh walk (a child `verify`) reads the same directory.
            for url in urls:
                status = await post(url, "/api/audit/verify")
                assert status["status"] == "intact", status
                assert status["last_position"] == status["head"] >= head, status
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=DEADLINE_S)
            assert process.stdout is not None
            process.stdout.close()
    result = cli("verify", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"OK: {head} events")
