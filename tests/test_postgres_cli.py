"""The PostgreSQL backend through the real CLI: a SQLite log copied into PostgreSQL
keeps its positions, ids and hashes, and verify, export and replay work on the copy;
the configuration's storage.url; the URL's password never printed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import asyncpg
import pytest
from pytest_aiohttp import AiohttpClient

from cryptomon.config import ConfigError, load_config
from cryptomon.events.archive import archive_probe_events
from cryptomon.events.postgres import PostgresEventStore
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import AlertAcknowledged, EventMetadata, ProbeRecorded
from cryptomon.http.audit import DATABASE_ENV, verify_command
from cryptomon.http.settings import Settings
from cryptomon.readmodels import load_projections, projection_settings
from cryptomon.service.app import create_app

SECRET = "pg-secret"  # part of the password tests/pgcluster.py puts in every URL


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    stdout, stderr = out.decode(), err.decode()
    assert SECRET not in stdout + stderr, "the database password was printed"
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def build_sqlite_log(path: Path) -> None:
    now = [1000.0]
    store = await EventStore.open(path, clock=lambda: now[0])
    try:
        for n in range(120):
            now[0] = 1000.0 + n
            if n % 10 == 5:
                meta = EventMetadata(correlation_id=f"c{n}", actor="alice")
                await store.append("acks", [AlertAcknowledged(n, "alice", now[0])], metadata=meta)
            else:
                outcome = "success" if n % 7 else "timeout"
                probe = ProbeRecorded("CoinGecko", "health", "/ping", outcome, started_at=now[0])
                await store.append("provider-CoinGecko", [probe])
        # Part of the log lives in an archive segment: the copy must carry it too.
        assert await archive_probe_events(store, before=1040.0, up_to_position=store.head) > 0
        projections, _ = await load_projections(store, projection_settings(load_config(None)))
        await store.save_snapshots(projections.snapshot_state(), projections.position)
    finally:
        await store.close()


async def test_a_sqlite_log_copied_into_postgresql_keeps_its_chain(
    tmp_path: Path, postgres_url: str
) -> None:
    source = tmp_path / "log.db"
    await build_sqlite_log(source)

    code, out, err = await cli("copy-log", "--db", str(source), "--to", postgres_url)
    assert code == 0, out + err
    assert out.startswith("OK: copied 120 events and ")
    assert ":***@" in out

    code, out, err = await cli("verify", "--db", postgres_url)
    assert code == 0, out + err
    assert out.startswith("OK: 120 events, chain intact")
    _, original, _ = await cli("export", "--db", str(source))
    _, copied, _ = await cli("export", "--db", postgres_url)
    assert copied == original  # every stored field, hash included, byte for byte
    assert [json.loads(line)["position"] for line in copied.splitlines()] == list(range(1, 121))
    code, out, err = await cli("replay", "--db", postgres_url)
    assert code == 0, out + err
    assert out.startswith("OK: replayed 120 events")

    # A second copy into the same database is refused; nothing is written.
    code, out, err = await cli("copy-log", "--db", str(source), "--to", postgres_url)
    assert code == 2
    assert "already holds 120 events" in err


async def test_a_tampered_log_is_not_copied(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "log.db"
    await build_sqlite_log(source)
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE events SET actor = 'mallory' WHERE position = 100")
    code, out, err = await cli("copy-log", "--db", str(source), "--to", postgres_url)
    assert code == 2
    assert "position 100 does not continue the chain" in err
    code, out, _ = await cli("verify", "--db", postgres_url)
    assert code == 0 and out.startswith("OK: 0 events")  # the failed batch left nothing


async def test_storage_url_in_the_config_selects_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    config = tmp_path / "cryptomon.toml"
    config.write_text(f'[storage]\nurl = "{postgres_url}"\n')
    async with await PostgresEventStore.open(postgres_url) as store:
        await store.append("p", [AlertAcknowledged(1, "alice", 1.0)])
    async with await EventStore.open(tmp_path / "other.db"):
        pass
    code, out, err = await cli("verify", "--config", str(config))
    assert code == 0, out + err
    assert out.startswith("OK: 1 events")
    # The flag wins over the file: --db names the SQLite file instead.
    code, out, _ = await cli("verify", "--config", str(config), "--db", str(tmp_path / "other.db"))
    assert code == 0 and out.startswith("OK: 0 events")


def test_storage_url_is_checked_and_never_echoed(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[storage]\nurl = "mysql://root:hunter2@db/log"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "storage.url: not a PostgreSQL URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    config.write_text(
        '[storage]\nurl = "postgresql://u:hunter2@db/log"\narchive_after = "7d"\n'
        '[[notifications]]\nname = "ops"\nkind = "webhook"\nurl = "https://hooks.example.com/x"\n'
    )
    # Notification channels are fine on PostgreSQL; archiving needs a directory for segments.
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    [message] = caught.value.errors
    assert "storage.archive_dir: archive_after on PostgreSQL writes its segments to" in message
    assert "hunter2" not in message
    config.write_text('[storage]\nurl = "postgresql://u:hunter2@db/log"\n')
    loaded = load_config(config)
    assert loaded.storage.target == "postgresql://u:hunter2@db/log"
    assert "hunter2" not in repr(loaded)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:ab@c:{secret}@127.0.0.1:1/db",  # an unescaped @ and : in the password
        "postgresql://u:ab?{secret}@127.0.0.1:1/db",  # an unescaped ?
        "postgresql://u:ab/{secret}@127.0.0.1:1/db",  # an unescaped /
        "postgresql://u@127.0.0.1:1/db?sslpassword={secret}",
        "postgresql://u@127.0.0.1:1/db?password={secret}",
    ],
)
async def test_a_url_that_fails_never_shows_its_password(url: str) -> None:
    # Port 1 refuses the connection; a URL asyncpg cannot parse fails before that.
    code, _, stderr = await cli("verify", "--db", url.format(secret=SECRET))
    assert code != 0
    assert "cannot open the event log at postgresql://" in stderr, stderr
    assert "Traceback" not in stderr, stderr


async def test_a_fresh_walk_of_a_postgresql_log_keeps_the_password_out_of_the_arguments(
    tmp_path: Path, postgres_url: str, aiohttp_client: AiohttpClient
) -> None:
    # A process's arguments are visible to every user: the URL goes in the child's env.
    command, environ = verify_command(postgres_url, None)
    assert SECRET in postgres_url and SECRET not in " ".join(command)
    assert command[-2:] == ["--db-env", DATABASE_ENV]
    assert environ[DATABASE_ENV] == postgres_url
    async with await PostgresEventStore.open(postgres_url) as store:
        for n in range(5):
            probe = ProbeRecorded("P", "health", "/ping", "success", started_at=float(n))
            await store.append("provider-P", [probe])
    config = tmp_path / "empty.toml"
    config.write_text("providers = []\n")
    settings = Settings.from_config(
        load_config(config), database=postgres_url, environ={}, probing=False
    )
    client = await aiohttp_client(create_app(settings))
    async with client.post("/api/audit/verify") as response:
        assert response.status == 200, await response.text()
        walked = await response.json()
    # The five probes, and the file's [monitoring] thresholds the service recorded at its
    # start (the log had none: its folds judged by the rules from before them).
    assert (walked["ok"], walked["count"], walked["last_position"]) == (True, 6, 6)
    connection = await asyncpg.connect(postgres_url)
    try:
        edited = await connection.execute(
            "UPDATE events SET payload = convert_to(replace(convert_from(payload, 'UTF8'),"
            " 'ping', 'pong'), 'UTF8')"
            " WHERE position = 3 AND position('ping'::bytea in payload) > 0"
        )
        assert edited == "UPDATE 1"
    finally:
        await connection.close()
    async with client.post("/api/audit/verify") as response:
        assert response.status == 200, await response.text()
        body = await response.text()
    assert SECRET not in body
    walked = json.loads(body)
    assert (walked["ok"], walked["status"], walked["broken_at"]) == (False, "broken", 3)
    async with client.get("/health") as response:
        assert response.status == 503
