"""The database failing under a running service: read-only, disk full, locked by another process.

Each test runs the real app with probing on, its SQLite file on a small ext4 file system
that the test mounts from a loop device (so the fault is real: `chattr +i` makes writes to
the open file fail, a filler file fills the disk). While the fault lasts `/health` and
`/readyz` answer 503 naming the database and its error, writes answer 503 and lost probes
are counted; once it clears the service records again, with the hash chain intact and
nothing recorded before lost.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from ci import IN_CI
from pytest_aiohttp import AiohttpClient
from standins import StandIn

from cryptomon.config import load_config
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

Client = TestClient[web.Request, web.Application]
DEADLINE_S = 30.0


def _can_mount() -> str | None:
    """Why this machine can't mount a loop file system, or None when it can."""
    if os.geteuid() != 0:
        return "mounting a loop file system needs root"
    missing = [
        tool for tool in ("mkfs.ext4", "mount", "umount", "chattr") if not shutil.which(tool)
    ]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB ext4 file system mounted in tmp_path; the test's database lives on it."""
    reason = _can_mount()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"storage-fault tests can't run in CI: {reason}")
        pytest.skip(reason)
    image, mount_point = tmp_path / "disk.img", tmp_path / "disk"
    mount_point.mkdir()
    with image.open("wb") as file:
        file.truncate(16 * 1024 * 1024)
    # -m 0: no blocks reserved for root, so the disk is full for us when it is full.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["chattr", "-R", "-i", str(mount_point)], check=False)
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


async def serve(
    tmp_path: Path, standin: StandIn, database: Path, aiohttp_client: AiohttpClient
) -> Client:
    config = tmp_path / "cryptomon.toml"
    config.write_text(
        f"""
[[providers]]
name = "Up"
category = "market_data"
base_url = "{standin.url("")}"
health_path = "/healthy"
interval = "1s"
"""
    )
    settings = Settings.from_config(load_config(config), database=database, environ={})
    return await aiohttp_client(create_app(settings))


async def get_json(client: Client, path: str) -> tuple[int, Any]:
    async with client.get(path) as response:
        return response.status, await response.json()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def health_is(client: Client, status: str) -> bool:
    _, health = await get_json(client, "/health")
    return bool(health["status"] == status)


async def recorded(client: Client) -> int:
    _, database = await get_json(client, "/api/database/health")
    return int(database["event_position"])


async def check_fault_and_recovery(
    client: Client, fault: Callable[[], None], clear: Callable[[], None], error: str
) -> None:
    """Probes record; under `fault` the service is unhealthy and counts what it loses;
    after `clear` it records again and the log verifies."""
    await until(lambda: _more_than(client, 3), "the first probes to be recorded")
    before = await recorded(client)

    fault()
    await until(lambda: health_is(client, "unhealthy"), "/health to report the fault")
    status, health = await get_json(client, "/health")
    assert status == 503
    database = health["components"]["database"]
    assert database["status"] == "unhealthy"
    assert error in database["error"]
    assert database["failed_appends"] > 0
    assert [p["component"] for p in health["problems"]] == ["database"]
    status, ready = await get_json(client, "/readyz")
    assert (status, ready["status"]) == (503, "not_ready")
    [problem] = ready["problems"]
    assert problem["component"] == "database" and error in problem["detail"]
    assert (await get_json(client, "/livez"))[0] == 200  # alive: no restart needed
    await until(lambda: _probes_lost(client), "a lost probe to be counted")
    status, database_health = await get_json(client, "/api/database/health")
    assert (status, database_health["writable"]) == (503, False)
    async with client.post("/api/scheduler/trigger/health_checks") as response:
        assert response.status == 503
        problem = await response.json()
        assert error in problem["detail"]

    clear()
    await until(lambda: health_is(client, "healthy"), "/health to recover")
    status, ready = await get_json(client, "/readyz")
    assert (status, ready["status"], ready["problems"]) == (200, "ready", [])
    after = await recorded(client)
    await until(lambda: _more_than(client, after), "probes to be recorded again")
    async with client.post("/api/scheduler/trigger/health_checks") as response:
        assert response.status == 200
    async with client.post("/api/audit/verify") as response:  # a fresh walk of the whole log
        status, verified = response.status, await response.json()
    assert (status, verified["ok"]) == (200, True), verified
    assert verified["count"] > before  # nothing recorded before the fault went missing


async def _more_than(client: Client, position: int) -> bool:
    return await recorded(client) > position


async def _probes_lost(client: Client) -> bool:
    _, health = await get_json(client, "/health")
    return bool(health["metrics"]["probes_lost"] > 0)


async def test_a_read_only_database_is_unhealthy_until_writable_again(
    tmp_path: Path, small_disk: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> None:
    database = small_disk / "x.db"
    client = await serve(tmp_path, standin, database, aiohttp_client)
    files = [str(database), f"{database}-wal"]  # not -shm: SQLite maps it, and a write faults

    def make_read_only() -> None:
        subprocess.run(["chattr", "+i", *files], check=True)

    def make_writable() -> None:
        subprocess.run(["chattr", "-i", *files], check=True)

    await check_fault_and_recovery(
        client, make_read_only, make_writable, "disk I/O error (SQLITE_IOERR"
    )


async def test_a_full_disk_is_unhealthy_until_space_is_freed(
    tmp_path: Path, small_disk: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> None:
    client = await serve(tmp_path, standin, small_disk / "x.db", aiohttp_client)
    filler = small_disk / "filler"

    def fill_the_disk() -> None:
        with filler.open("wb") as file:
            try:
                while True:
                    file.write(b"\0" * 65536)
                    file.flush()
            except OSError:
                pass  # full

    await check_fault_and_recovery(
        client, fill_the_disk, filler.unlink, "disk is full (SQLITE_FULL)"
    )


async def test_a_database_locked_by_another_process_is_unhealthy_until_released(
    tmp_path: Path, small_disk: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> None:
    database = small_disk / "x.db"
    client = await serve(tmp_path, standin, database, aiohttp_client)
    holder: list[subprocess.Popen[str]] = []
    # Another program (a backup, an sqlite3 shell) holds the write lock until told to stop.
    hold_lock = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(database)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )

    def lock() -> None:
        process = subprocess.Popen(
            [sys.executable, "-c", hold_lock],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holder.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "locked\n"

    def release() -> None:
        [process] = holder
        assert process.stdin is not None
        process.stdin.close()
        assert process.wait(timeout=DEADLINE_S) == 0

    try:
        await check_fault_and_recovery(client, lock, release, "database is locked (SQLITE_BUSY)")
    finally:
        for process in holder:
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()
