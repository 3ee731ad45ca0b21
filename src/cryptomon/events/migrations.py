"""Numbered SQL migrations, applied in order when the store opens.

The files live in `migrations/` at the top of the repository; the wheel ships
them inside the package as `cryptomon/migrations`. PostgreSQL's own numbered
files live beside them in `migrations_postgres/` (applied by
`cryptomon.events.postgres`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

_PACKAGED = Path(__file__).resolve().parent.parent / "migrations"
_SOURCE_CHECKOUT = Path(__file__).resolve().parents[3] / "migrations"
_PACKAGED_POSTGRES = Path(__file__).resolve().parent.parent / "migrations_postgres"
_SOURCE_CHECKOUT_POSTGRES = Path(__file__).resolve().parents[3] / "migrations_postgres"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaError(RuntimeError):
    """The database's schema is not one this cryptomon can use."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    # An installed wheel carries the files in the package; an editable install
    # reads them from the checkout.
    return _PACKAGED if _PACKAGED.is_dir() else _SOURCE_CHECKOUT


def postgres_migrations_dir() -> Path:
    return _PACKAGED_POSTGRES if _PACKAGED_POSTGRES.is_dir() else _SOURCE_CHECKOUT_POSTGRES


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise SchemaError(f"migration file {path} is not named NNNN_description.sql")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise SchemaError(
                f"migrations are not numbered 1..n: expected {expected:04d}, found {migration.name}"
            )
    if not found:
        raise SchemaError(f"no migrations found in {directory}")
    return found


async def applied_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ) as cursor:
        if await cursor.fetchone() is None:
            return 0
    async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def check_not_newer(path: Path | str, version: int, known: list[Migration]) -> None:
    latest = known[-1].version
    if version > latest:
        raise SchemaError(
            f"{path} has schema version {version}, newer than this cryptomon knows "
            f"(up to {latest}); upgrade cryptomon to open it"
        )


async def migrate(conn: aiosqlite.Connection, path: Path) -> int:
    """Apply every pending migration, each in its own transaction; return the version."""
    known = load_migrations()
    current = await applied_version(conn)
    check_not_newer(path, current, known)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for migration in known[current:]:
        try:
            await conn.executescript(
                "BEGIN IMMEDIATE;\n"
                f"{migration.sql}\n"
                f"INSERT INTO schema_migrations (version, name, applied_at) "
                f"VALUES ({migration.version}, '{migration.name}', {time.time()});\n"
                "COMMIT;"
            )
        except Exception as exc:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise SchemaError(f"migration {migration.name} failed on {path}: {exc}") from exc
    return known[-1].version
