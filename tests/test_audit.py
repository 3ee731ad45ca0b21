"""verify and export through the real CLI, tampering with sqlite3 directly, and a
SIGKILL crash of a process appending in a loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import ProbeRecorded


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptomon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def make_log(path: Path, count: int, clock_start: float = 1_000.0) -> None:
    now = [clock_start]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    async with await EventStore.open(path, clock=clock) as store:
        for n in range(count):
            await store.append(
                f"provider-{n % 3}",
                [ProbeRecorded("P", "health", "/ping", "success", started_at=float(n))],
            )


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    asyncio.run(make_log(path, 20))
    return path


def test_verify_reports_ok_with_count_and_last_hash(log_path: Path) -> None:
    with sqlite3.connect(log_path) as conn:
        last_hash = conn.execute("SELECT hash FROM events WHERE position = 20").fetchone()[0]
    result = run_cli("verify", "--db", str(log_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OK: 20 events, chain intact, last hash {last_hash}"


@pytest.mark.parametrize(
    ("tamper", "broken_at"),
    [
        ("UPDATE events SET payload = replace(payload, 'ping', 'pong') WHERE position = 7", 7),
        ("DELETE FROM events WHERE position = 12", 12),
        ("DELETE FROM events WHERE position = 20", 20),
        ("UPDATE events SET recorded_at = recorded_at + 1 WHERE position = 3", 3),
    ],
    ids=["edited-payload", "deleted-row", "deleted-last-row", "edited-time"],
)
def test_verify_finds_the_first_broken_position(
    log_path: Path, tamper: str, broken_at: int
) -> None:
    with sqlite3.connect(log_path) as conn:
        conn.execute(tamper)
    result = run_cli("verify", "--db", str(log_path))
    assert result.returncode == 1
    assert result.stdout.startswith(f"BROKEN at position {broken_at}:"), result.stdout


def test_verify_detects_two_swapped_rows(log_path: Path) -> None:
    columns = "event_id, stream, version, type, schema_version, recorded_at, payload, hash"
    with sqlite3.connect(log_path) as conn:
        five = conn.execute(f"SELECT {columns} FROM events WHERE position = 5").fetchone()
        nine = conn.execute(f"SELECT {columns} FROM events WHERE position = 9").fetchone()
        conn.execute("DELETE FROM events WHERE position IN (5, 9)")
        marks = ", ".join("?" * 9)
        conn.execute(f"INSERT INTO events (position, {columns}) VALUES ({marks})", (5, *nine))
        conn.execute(f"INSERT INTO events (position, {columns}) VALUES ({marks})", (9, *five))
    result = run_cli("verify", "--db", str(log_path))
    assert result.returncode == 1
    assert result.stdout.startswith("BROKEN at position 5:"), result.stdout


def test_verify_json_prints_the_report_as_one_object(log_path: Path) -> None:
    with sqlite3.connect(log_path) as conn:
        [(hash_6,), (hash_20,)] = conn.execute(
            "SELECT hash FROM events WHERE position IN (6, 20) ORDER BY position"
        ).fetchall()
    result = run_cli("verify", "--json", "--db", str(log_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "ok": True, "count": 20, "last_position": 20, "last_hash": hash_20,
        "broken_at": None, "reason": None,
    }  # fmt: skip
    with sqlite3.connect(log_path) as conn:
        conn.execute(
            "UPDATE events SET payload = replace(payload, 'ping', 'pong') WHERE position = 7"
        )
    result = run_cli("verify", "--json", "--db", str(log_path))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert (report["broken_at"], report["count"], report["last_position"]) == (7, 6, 6)
    assert report["last_hash"] == hash_6
    assert "hash does not match" in report["reason"]


def test_db_env_names_the_variable_holding_the_database(log_path: Path) -> None:
    env = {**os.environ, "CRYPTOMON_TEST_DB": str(log_path)}
    result = run_cli("verify", "--db-env", "CRYPTOMON_TEST_DB", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: 20 events")
    both = run_cli("verify", "--db-env", "CRYPTOMON_TEST_DB", "--db", str(log_path), env=env)
    assert both.returncode == 1
    assert "give --db or --db-env, not both" in both.stderr
    unset = run_cli("verify", "--db-env", "CRYPTOMON_TEST_UNSET_DB")
    assert unset.returncode == 1
    assert "--db-env names CRYPTOMON_TEST_UNSET_DB, which is not set" in unset.stderr


def test_export_writes_a_position_range_as_json_lines(log_path: Path) -> None:
    result = run_cli("export", "--db", str(log_path), "--from-position", "5", "--to-position", "8")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["position"] for line in lines] == [5, 6, 7, 8]
    assert lines[0]["payload"]["type"] == "ProbeRecorded"
    assert lines[0]["payload"]["started_at"] == 4.0
    assert len(lines[0]["hash"]) == 64
    assert "exported 4 events" in result.stderr


def test_export_filters_by_time(log_path: Path) -> None:
    # make_log records event n at 1001 + n seconds after the epoch
    result = run_cli(
        "export", "--db", str(log_path), "--since", "1970-01-01T00:16:50Z", "--until", "1013"
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(x)["position"] for x in result.stdout.splitlines()] == [10, 11, 12]


def test_bad_arguments_get_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("export", "--db", str(tmp_path / "x.db"), "--since", "yesterday")
    assert result.returncode == 2
    assert "'yesterday' is not a time" in result.stderr
    missing = run_cli("verify", "--db", str(tmp_path / "nothing.db"))
    assert missing.returncode == 2
    assert "no database at" in missing.stderr


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve", "check-config", "verify", "export", "replay"):
        assert command in result.stdout


APPENDER = """
import asyncio, sys
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import ProbeRecorded

async def main() -> None:
    store = await EventStore.open(sys.argv[1])
    n = 0
    async def one(i: int) -> None:
        [position] = await store.append(
            f"s{i % 7}", [ProbeRecorded("P", "health", "/", "success", started_at=float(i))]
        )
        print(position, flush=True)
    while True:
        await asyncio.gather(*(one(n + k) for k in range(20)))
        n += 20

asyncio.run(main())
"""


def test_sigkill_while_appending_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    for _round in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        acknowledged: list[int] = []
        deadline = time.monotonic() + 30
        while len(acknowledged) < 400 and time.monotonic() < deadline:
            acknowledged.append(int(child.stdout.readline()))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        acknowledged += [int(line) for line in child.stdout.read().split()]
        child.stdout.close()
        assert len(acknowledged) >= 400
        with sqlite3.connect(path) as conn:
            stored = {row[0] for row in conn.execute("SELECT position FROM events")}
        assert set(acknowledged) <= stored
        assert stored == set(range(1, max(stored) + 1))
        result = run_cli("verify", "--db", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


def test_verify_position_and_hash_confirms_what_a_report_names(log_path: Path) -> None:
    with sqlite3.connect(log_path) as conn:
        [(hash_12,), (hash_13,)] = conn.execute(
            "SELECT hash FROM events WHERE position IN (12, 13) ORDER BY position"
        ).fetchall()
    result = run_cli("verify", "--db", str(log_path), "--position", "12", "--hash", hash_12)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == (
        f"OK: position 12 has hash {hash_12}; the chain is intact up to it"
    )
    wrong = run_cli("verify", "--db", str(log_path), "--position", "12", "--hash", hash_13)
    assert wrong.returncode == 1
    assert wrong.stdout.startswith(f"DIFFERENT: position 12 has hash {hash_12}, not {hash_13}")
    beyond = run_cli("verify", "--db", str(log_path), "--position", "99", "--hash", hash_12)
    assert beyond.returncode == 1
    assert beyond.stdout.startswith("MISSING: the log ends at position 20, before 99")
    as_json = run_cli(
        "verify", "--json", "--db", str(log_path), "--position", "12", "--hash", hash_12
    )
    assert json.loads(as_json.stdout)["ok"] is True and as_json.returncode == 0
    # A break before the position: the hash there proves nothing.
    with sqlite3.connect(log_path) as conn:
        conn.execute(
            "UPDATE events SET payload = replace(payload, 'ping', 'pong') WHERE position = 7"
        )
    broken = run_cli("verify", "--db", str(log_path), "--position", "12", "--hash", hash_12)
    assert broken.returncode == 1
    assert broken.stdout.startswith("BROKEN at position 7:")


@pytest.mark.parametrize(
    "args",
    [["--position", "3"], ["--hash", "0" * 64], ["--position", "3", "--hash", "xyz"]],
)
def test_verify_position_refuses_half_or_malformed_arguments(
    log_path: Path, args: list[str]
) -> None:
    result = run_cli("verify", "--db", str(log_path), *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --"), result.stderr
