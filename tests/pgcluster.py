"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary directory,
served on a unix socket only (no TCP port to collide on), as the `postgres` user
when the tests run as root, stopped and deleted at the end of the session.

When the PostgreSQL binaries are missing the PostgreSQL tests skip, except in CI
(CI=true), where they fail: a CI run must never pass without them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from ci import IN_CI

USER = "cryptomon"
# Trust authentication ignores it; it is in the URL so tests can check it never leaks.
PASSWORD = "pg-secret-7f3a9c"


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl: Debian's newest version, or PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for directory in debian:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


class PostgresCluster:
    def __init__(self, binaries: Path, *, durable: bool = False) -> None:
        self.binaries = binaries
        # Tests skip fsync for speed; benchmarks keep PostgreSQL's durable defaults, to be
        # compared fairly with SQLite's synchronous=FULL.
        self.durable = durable
        self.directory = Path(tempfile.mkdtemp(prefix="cryptomon-pg-"))
        self.data = self.directory / "data"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user") from None
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self._as_owner, *command], check=True, capture_output=True, text=True, timeout=120
        )

    def start(self) -> None:
        self._run(
            str(self.binaries / "initdb"), "-D", str(self.data), "-U", USER,
            "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.directory}'"
            " -c max_connections=300"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.binaries / "pg_ctl"), "-D", str(self.data), "-l",
            str(self.directory / "server.log"), "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@/{database}?host={self.directory}"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    binaries = find_binaries()
    if binaries is None:
        message = (
            "PostgreSQL is not installed (no initdb/pg_ctl in /usr/lib/postgresql/*/bin"
            " or on PATH): install Debian's `postgresql` package"
        )
        if IN_CI:
            pytest.fail(f"{message}; CI must run the PostgreSQL tests", pytrace=False)
        pytest.skip(message)
    cluster = PostgresCluster(binaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def postgres_url(postgres_cluster: PostgresCluster) -> AsyncIterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_cluster.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield postgres_cluster.url(name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
